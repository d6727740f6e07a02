"""Splits a reasoning model's output into its reasoning and its answer. Pure and incremental.

Reasoning models served by Triton (DeepSeek-R1, Qwen3 and their TensorRT-LLM builds) write their
chain of thought first, between `<think>` and `</think>`, then the answer. The text arrives in
arbitrary deltas, so a tag may be split across them: the splitter holds back only the few
characters that could still turn into a tag, and emits everything else at once.

Rules (the same whether the text comes whole or one character at a time):
- A reasoning block is recognised only at the very start of the output (after whitespace). A
  `<think>` later in the answer is answer text (a model may well write about tags).
- Templates that open the block themselves (DeepSeek-R1's appends `<think>\n` to the prompt) make
  the output start inside it: `implicit_open=True` reads the start as reasoning, with or without
  an opening tag.
- Whitespace around the reasoning (after `<think>`, before `</think>`) and between `</think>` and
  the answer is dropped; an answer with no reasoning block keeps its text exactly.
- An unterminated block (the token limit was reached while thinking) is all reasoning.
"""

from __future__ import annotations

from typing import Literal

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

Phase = Literal["start", "reasoning", "after_reasoning", "answer"]


def _partial_tag_at_end(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag` (could still become it)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ThinkSplitter:
    """Feed deltas in order; each call returns the (reasoning, answer) text that is now certain."""

    def __init__(self, implicit_open: bool = False, open_tag: str = OPEN_TAG, close_tag: str = CLOSE_TAG):
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.implicit_open = implicit_open
        self.phase: Phase = "start"
        self.opened_block = False  # the output began with a reasoning block (maybe an empty one)
        self._held = ""  # text not yet decided: a possible tag, or whitespace that may be dropped
        self._reasoning_started = False  # non-whitespace reasoning was emitted

    def feed(self, text: str) -> tuple[str, str]:
        reasoning, answer = [], []
        text = self._held + text
        self._held = ""
        while text:
            if self.phase == "start":
                text = self._start(text, answer)
            elif self.phase == "reasoning":
                text = self._reasoning(text, reasoning)
            elif self.phase == "after_reasoning":
                stripped = text.lstrip()
                if stripped:
                    self.phase = "answer"
                text = stripped
            else:
                answer.append(text)
                text = ""
        return "".join(reasoning), "".join(answer)

    def finish(self) -> tuple[str, str]:
        """The end of the output: whatever was held back is decided now."""
        held, self._held = self._held, ""
        if self.phase == "start":
            if self.implicit_open:
                self._enter_reasoning()
                return held.strip(), ""
            return "", held
        if self.phase == "reasoning":
            # Unterminated: a partial closing tag is reasoning text; trailing whitespace is dropped.
            return self._emit_reasoning(held.rstrip()), ""
        return "", ""

    # ---- phases ---------------------------------------------------------------------------------
    def _start(self, text: str, answer: list[str]) -> str:
        stripped = text.lstrip()
        if stripped.startswith(self.open_tag):
            self._enter_reasoning()
            return stripped[len(self.open_tag) :]
        if not stripped or self.open_tag.startswith(stripped):
            self._held = text  # whitespace, or the opening tag's first characters: undecided
            return ""
        if self.implicit_open:
            self._enter_reasoning()
            return stripped
        self.phase = "answer"
        answer.append(text)
        return ""

    def _enter_reasoning(self) -> None:
        self.phase = "reasoning"
        self.opened_block = True

    def _reasoning(self, text: str, reasoning: list[str]) -> str:
        if not self._reasoning_started:
            text = text.lstrip()  # whitespace right after <think>
            if not text:
                return ""
        end = text.find(self.close_tag)
        if end >= 0:
            reasoning.append(self._emit_reasoning(text[:end].rstrip()))
            self.phase = "after_reasoning"
            return text[end + len(self.close_tag) :]
        # Hold back a possible start of the closing tag, and the whitespace before it (dropped if
        # the tag follows, emitted if more reasoning does).
        partial = _partial_tag_at_end(text, self.close_tag)
        body = text[: len(text) - partial]
        kept = body.rstrip()
        self._held = text[len(kept) :]
        reasoning.append(self._emit_reasoning(kept))
        return ""

    def _emit_reasoning(self, text: str) -> str:
        if text:
            self._reasoning_started = True
        return text


def split_whole(text: str, implicit_open: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a complete output."""
    splitter = ThinkSplitter(implicit_open)
    reasoning, answer = splitter.feed(text)
    more_reasoning, more_answer = splitter.finish()
    return reasoning + more_reasoning, answer + more_answer
