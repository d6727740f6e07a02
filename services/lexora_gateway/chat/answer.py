"""A chat answer read as the engine produces it, protocol-free: reasoning split from the answer
(reasoning.py), the answer split into prose and tool calls (tool_stream.py). The OpenAI, Anthropic
and Responses renderers all read the same pieces, streamed or not, so the three protocols cannot
disagree about what the model said. Pure: chunks in, pieces out.
"""

from __future__ import annotations

from dataclasses import dataclass

from lexora_contracts.messages import GenerationChunk
from lexora_gateway.chat.reasoning import ReasoningTracker
from lexora_gateway.chat.tool_stream import AnswerPiece, CallScanner
from lexora_gateway.chat.tools import ToolCall, ToolUse


@dataclass(frozen=True)
class ReasoningPiece:
    text: str


Piece = ReasoningPiece | AnswerPiece


@dataclass(frozen=True)
class Answer:
    """The whole answer, once the engine's final chunk arrived."""

    done: GenerationChunk  # counts, finish reason, cost
    reasoning: str
    text: str  # the prose answer ("" when the answer is calls)
    calls: list[ToolCall]
    reasons: bool  # the model reasons (its output was split)
    reasoning_tokens: int | None  # of completion tokens, when known (ReasoningTracker)


class AnswerReader:
    """Feed it the engine's chunks in order; `answer` is set once the final one is read."""

    def __init__(self, tools: ToolUse, reasons: bool, call_id_prefix: str):
        self._tracker = ReasoningTracker() if reasons else None
        self._scanner = CallScanner(tools, call_id_prefix)
        self.answer: Answer | None = None

    def read(self, chunk: GenerationChunk) -> list[Piece]:
        pieces: list[Piece] = []
        if chunk.kind == "delta" and chunk.text:
            pieces += self._split(chunk.text, chunk.completion_tokens)
        if chunk.kind == "done":
            if self._tracker is not None:
                reasoning, answer = self._tracker.finish(chunk.completion_tokens)
                pieces += self._pieces(reasoning, answer)
            pieces += self._scanner.finish()
            self.answer = self._whole(chunk)
        return pieces

    def _split(self, text: str, completion_tokens: int) -> list[Piece]:
        if self._tracker is None:
            return list(self._scanner.feed(text))
        return self._pieces(*self._tracker.feed(text, completion_tokens))

    def _pieces(self, reasoning: str, answer: str) -> list[Piece]:
        pieces: list[Piece] = [ReasoningPiece(reasoning)] if reasoning else []
        return pieces + self._scanner.feed(answer)

    def _whole(self, done: GenerationChunk) -> Answer:
        tracker = self._tracker
        return Answer(
            done=done,
            reasoning="".join(tracker.reasoning_text) if tracker else "",
            text="".join(self._scanner.text),
            calls=list(self._scanner.calls),
            reasons=tracker is not None,
            reasoning_tokens=tracker.reasoning_tokens if tracker else 0,
        )
