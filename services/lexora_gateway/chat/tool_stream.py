"""Reading tool calls out of an answer as it is generated. Pure.

With tools offered, the answer is prose or calls in the form tool_grammar.py constrains it to: one
`{"name": …, "arguments": {…}}` object, or a JSON array of them. The first character that is not
whitespace tells which. Calls are reported piece by piece, as both protocols stream them: a call
opens once its name is complete, its arguments follow as the raw text the model writes (OpenAI's
`delta.tool_calls[].function.arguments`, Anthropic's `input_json_delta`), and it closes with the
parsed arguments. Text that turns out not to be a call before any call opened (possible only on
an engine that did not apply the grammar) is prose after all.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from lexora_gateway.chat.tools import ToolCall, ToolUse


@dataclass(frozen=True)
class TextPiece:
    text: str


@dataclass(frozen=True)
class CallOpened:
    index: int
    call_id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    index: int
    text: str  # the next piece of the arguments' JSON text


@dataclass(frozen=True)
class CallClosed:
    index: int
    call: ToolCall


AnswerPiece = TextPiece | CallOpened | CallArguments | CallClosed
_WHITESPACE = " \t\r\n"
# What comes before a call's arguments, between optional whitespace; None stands for the name.
_HEAD: tuple[str | None, ...] = ("{", '"name"', ":", None, ",", '"arguments"', ":")
_Match = Literal["match", "partial", "fail"]


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _string_end(text: str, pos: int) -> int | None:
    """The index after the JSON string opening at text[pos], or None if it has not ended yet."""
    i = pos + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return None


def _match_head(text: str, pos: int) -> tuple[_Match, str, int]:
    """Match a call's head at `pos`: (status, tool name, where its arguments begin)."""
    name = ""
    for expected in _HEAD:
        pos = _skip_ws(text, pos)
        if pos == len(text):
            return "partial", "", pos
        if expected is None:
            if text[pos] != '"':
                return "fail", "", pos
            end = _string_end(text, pos)
            if end is None:
                return "partial", "", pos
            try:
                name = json.loads(text[pos:end])
            except ValueError:
                return "fail", "", pos
            pos = end
            continue
        seen = text[pos : pos + len(expected)]
        if not expected.startswith(seen):
            return "fail", "", pos
        if len(seen) < len(expected):
            return "partial", "", pos
        pos += len(expected)
    pos = _skip_ws(text, pos)
    if pos == len(text):
        return "partial", "", pos
    return ("match" if text[pos] == "{" else "fail"), name, pos


class CallScanner:
    """Feed it the answer's text as it arrives; it returns what can be said so far."""

    def __init__(self, use: ToolUse, id_prefix: str):
        self._names = {t.name for t in use.tools if use.forced_name in (None, t.name)}
        self._id_prefix = id_prefix
        self._mode: Literal["undecided", "prose", "calls", "done"] = "undecided" if use.active else "prose"
        self._text = ""  # everything since the answer began, while undecided or in calls
        self._pos = 0  # how far the calls have been read
        self._step: Literal["open", "head", "arguments", "tail"] = "open"
        self._in_array = False
        self._depth = 0  # nesting inside the open call's arguments
        self._in_string = False
        self._escaped = False
        self._open: CallOpened | None = None
        self._arguments: list[str] = []
        self.calls: list[ToolCall] = []
        self.text: list[str] = []  # the prose answer

    def feed(self, text: str) -> list[AnswerPiece]:
        if not text:
            return []
        if self._mode == "prose":
            self.text.append(text)
            return [TextPiece(text)]
        if self._mode == "done":
            return []
        self._text += text
        if self._mode == "undecided":
            start = _skip_ws(self._text, 0)
            if start == len(self._text):
                return []
            if self._text[start] not in "{[":
                return self._to_prose()
            self._mode = "calls"
        return self._read_calls()

    def finish(self) -> list[AnswerPiece]:
        """The answer ended: whatever was held is prose, and a call cut short is closed with the
        arguments it has (max_tokens may cut a call, as it may cut prose)."""
        if self._mode == "undecided" or (self._mode == "calls" and self._open is None and not self.calls):
            return self._to_prose()
        if self._open is not None:
            return [self._close()]
        return []

    def _to_prose(self) -> list[AnswerPiece]:
        self._mode = "prose"
        text, self._text = self._text, ""
        self.text.append(text)
        return [TextPiece(text)] if text else []

    def _read_calls(self) -> list[AnswerPiece]:
        out: list[AnswerPiece] = []
        text = self._text
        while self._mode == "calls":
            pos = _skip_ws(text, self._pos)
            if self._step == "open":
                if pos == len(text):
                    break
                self._in_array = text[pos] == "["
                self._pos = pos + 1 if self._in_array else pos
                self._step = "head"
            elif self._step == "head":
                status, name, end = _match_head(text, self._pos)
                if status == "partial":
                    break
                if status == "fail" or name not in self._names:
                    return out + self._broken()
                call_id = f"{self._id_prefix}{uuid.uuid4().hex[:24]}"
                self._open = CallOpened(len(self.calls), call_id, name)
                out.append(self._open)
                self._pos, self._step = end, "arguments"
                self._depth, self._in_string, self._escaped = 0, False, False
            elif self._step == "arguments":
                piece = self._read_arguments()
                if piece:
                    assert self._open is not None
                    out.append(CallArguments(self._open.index, piece))
                if self._depth > 0:
                    break
                self._step = "tail"
            else:  # tail: the call's "}", then "," or "]" in an array
                if self._open is not None:
                    if pos == len(text):
                        break
                    if text[pos] != "}":
                        return out + self._broken()
                    out.append(self._close())
                    self._pos = pos + 1
                    if not self._in_array:
                        self._mode = "done"
                    continue
                if pos == len(text):
                    break
                if text[pos] == ",":
                    self._pos, self._step = pos + 1, "head"
                elif text[pos] == "]":
                    self._pos, self._mode = pos + 1, "done"
                else:
                    return out + self._broken()
        return out

    def _read_arguments(self) -> str:
        """Consume the arguments object's text up to its end or the buffer's; returns it."""
        text, start, i = self._text, self._pos, self._pos
        while i < len(text):
            ch = text[i]
            i += 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    break
        self._pos = i
        piece = text[start:i]
        self._arguments.append(piece)
        return piece

    def _close(self) -> CallClosed:
        assert self._open is not None
        opened, raw = self._open, "".join(self._arguments)
        self._open, self._arguments = None, []
        try:
            arguments: Any = json.loads(raw)
        except ValueError:
            arguments = None
        call = ToolCall(opened.call_id, opened.name, arguments if isinstance(arguments, dict) else {})
        self.calls.append(call)
        return CallClosed(opened.index, call)

    def _broken(self) -> list[AnswerPiece]:
        """Not calls after all: prose if no call opened yet; otherwise the rest is dropped (a call
        already went out), after closing the open one."""
        if not self.calls and self._open is None:
            return self._to_prose()
        self._mode = "done"
        return [self._close()] if self._open is not None else []
