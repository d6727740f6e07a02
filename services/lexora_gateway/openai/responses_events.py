"""A response's output built item by item, with the typed SSE events of the Responses API. Pure.

Every answer goes through it, streamed or not (a non-streaming route discards the events), so both
end with the same output items:

    response.created, response.in_progress
    reasoning item:  output_item.added, [reasoning_summary_part.added, reasoning_summary_text.delta…,
                     reasoning_summary_text.done, reasoning_summary_part.done], output_item.done
    message item:    output_item.added, content_part.added, output_text.delta…, output_text.done,
                     content_part.done, output_item.done
    function call:   output_item.added, function_call_arguments.delta…, .done, output_item.done
                     (one item per call; parallel calls follow each other)
    response.completed (response.incomplete when max_output_tokens cut it; response.failed on an error)

Each event carries its `sequence_number`, counted from 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from lexora_gateway.openai import responses_translation as rt


def sse(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class ResponseEvents:
    """`skeleton(status, output, usage, incomplete_details, error)` builds the Response object
    (responses_translation.response_body with the request's settings bound)."""

    def __init__(
        self,
        skeleton: Callable[..., dict[str, Any]],
        summary: bool = False,
        encrypted: bool = False,
        new_id: Callable[[str], str] = rt.new_id,
    ):
        self._skeleton = skeleton
        self._summary = summary
        self._encrypted = encrypted
        self._new_id = new_id
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # items done, in order
        self._open: dict[str, Any] | None = None  # the item being written
        self._parts: list[str] = []  # its text so far
        self.final: dict[str, Any] | None = None  # the Response, once completed or failed

    def _event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(kind, body)

    @property
    def _index(self) -> int:
        return len(self.output)  # the open item's output_index

    def start(self) -> bytes:
        response = self._skeleton("in_progress", [])
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def reasoning(self, text: str) -> bytes:
        if not text:
            return b""
        out = b""
        if self._open is None or self._open["type"] != "reasoning":
            out += self.close()
            self._open = {"id": self._new_id("rs"), "type": "reasoning", "summary": []}
            out += self._event("response.output_item.added", output_index=self._index, item=self._open)
            if self._summary:
                out += self._event(
                    "response.reasoning_summary_part.added",
                    item_id=self._open["id"],
                    output_index=self._index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
        self._parts.append(text)
        if self._summary:
            out += self._event(
                "response.reasoning_summary_text.delta",
                item_id=self._open["id"],
                output_index=self._index,
                summary_index=0,
                delta=text,
            )
        return out

    def text(self, text: str) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != "message":
            out += self.close()
            self._open = rt.message_item(self._new_id("msg"), None, "in_progress")
            item_id = self._open["id"]
            out += self._event("response.output_item.added", output_index=self._index, item=self._open)
            out += self._event(
                "response.content_part.added",
                item_id=item_id,
                output_index=self._index,
                content_index=0,
                part=rt.output_text_part(""),
            )
        if not text:
            return out
        self._parts.append(text)
        return out + self._event(
            "response.output_text.delta",
            item_id=self._open["id"],
            output_index=self._index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def close(self) -> bytes:
        """Finish the open item, if any."""
        item, text = self._open, "".join(self._parts)
        if item is None:
            return b""
        self._open, self._parts = None, []
        index, item_id, out = self._index, item["id"], b""
        if item["type"] == "reasoning":
            done = rt.reasoning_item(item_id, text, self._summary, self._encrypted)
            if self._summary:
                part = {"type": "summary_text", "text": text}
                out += self._event(
                    "response.reasoning_summary_text.done",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    text=text,
                )
                out += self._event(
                    "response.reasoning_summary_part.done",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    part=part,
                )
        elif item["type"] == "function_call":
            done = {**item, "status": "completed", "arguments": text}
            where = {"item_id": item_id, "output_index": index}
            out += self._event("response.function_call_arguments.done", **where, name=item["name"], arguments=text)
        else:
            done = rt.message_item(item_id, text)
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            out += self._event("response.output_text.done", **where, text=text, logprobs=[])
            out += self._event("response.content_part.done", **where, part=rt.output_text_part(text))
        self.output.append(done)
        return out + self._event("response.output_item.done", output_index=index, item=done)

    def call_opened(self, call_id: str, name: str) -> bytes:
        """A function_call item, opened as soon as the call's name is known."""
        out = self.close()
        self._open = rt.function_call_item(self._new_id("fc"), call_id, name, "", "in_progress")
        return out + self._event("response.output_item.added", output_index=self._index, item=self._open)

    def call_arguments(self, text: str) -> bytes:
        """The next piece of the open call's arguments, as the model writes them."""
        assert self._open is not None and self._open["type"] == "function_call"
        self._parts.append(text)
        return self._event(
            "response.function_call_arguments.delta", item_id=self._open["id"], output_index=self._index, delta=text
        )

    def complete(self, finish_reason: str | None, usage: dict[str, Any]) -> bytes:
        """Close the last item (an answer always has a message or a call, maybe empty) and end."""
        out = b""
        if not any(item["type"] in ("message", "function_call") for item in [*self.output, self._open or {"type": ""}]):
            out += self.text("")
        out += self.close()
        status, incomplete = rt.status_of(finish_reason)
        self.final = self._skeleton(status, self.output, usage, incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, response=self.final)

    def fail(self, code: str, message: str) -> bytes:
        """The stream broke after it began: response.failed, with what was done so far."""
        self._open, self._parts = None, []
        self.final = self._skeleton("failed", self.output, None, None, {"code": code, "message": message})
        return self._event("response.failed", response=self.final)
