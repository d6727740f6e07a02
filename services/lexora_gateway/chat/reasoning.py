"""Reasoning ("thinking"), protocol-free: the one setting the OpenAI `reasoning`/`reasoning_effort`
and the Anthropic `thinking` parameters translate into (lexora_gateway.openai.translation,
lexora_gateway.anthropic.translation), what of it reaches the engine, and the split of the answer
the protocols render (lexora_gateway.chat.answer). Pure:
no I/O.

Models without the "reasoning" capability ignore the setting (it is still validated). For models
with it, the engine gets `GenerationRequest.reasoning` / `reasoning_budget` and the gateway splits
the output at the model's `<think>...</think>` (think_tags.py) into reasoning and answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from lexora_contracts.messages import GenerationRequest
from lexora_contracts.registry import ModelRecord
from lexora_gateway.chat.think_tags import ThinkSplitter

REASONING_CAPABILITY = "reasoning"
# Share of max_tokens an effort level may spend thinking (OpenRouter's conversion of effort to a
# token budget for models that take a budget). Anthropic's `output_config.effort` adds "xhigh" and
# "max"; they take larger shares that still leave the answer a twentieth of max_tokens, since a
# budget of all of it would leave a model that thinks to the limit no room to answer.
EFFORT_SHARE = {"low": 0.2, "medium": 0.5, "high": 0.8, "xhigh": 0.9, "max": 0.95}


@dataclass(frozen=True)
class ReasoningSetting:
    """What the client asked for. Absent (None on the job): the model's default.

    A budget is settled by `budget` once the job's max_tokens is known, that is once its model is
    (max_tokens defaults to what the model's context allows)."""

    enabled: bool
    budget_tokens: int | None = None  # most tokens to spend thinking, as asked; capped by budget()
    effort: str | None = None  # without budget_tokens: a share of max_tokens (EFFORT_SHARE)
    # Reason, but leave the reasoning text out of the answer: OpenAI's `reasoning.exclude` (no
    # reasoning fields), Anthropic's `thinking.display: "omitted"` (thinking blocks, empty).
    exclude: bool = False

    def budget(self, max_tokens: int) -> int | None:
        """The most tokens to spend thinking for a job of `max_tokens`: 0 is none, None the model's
        default. An explicit budget not below max_tokens is capped below it, leaving the answer room
        (the documented OpenAI example asks for 512 with max_tokens 256); an effort takes its share."""
        if not self.enabled:
            return 0
        if self.budget_tokens is not None:
            return min(self.budget_tokens, max(max_tokens - 1, 1))
        if self.effort is not None:
            return max(1, int(max_tokens * EFFORT_SHARE[self.effort]))
        return None


def reasons(model: ModelRecord) -> bool:
    """Whether the model acts on a reasoning setting (others ignore it)."""
    return REASONING_CAPABILITY in model.capabilities


def engine_fields(setting: ReasoningSetting | None, model: ModelRecord, max_tokens: int) -> tuple[bool, int | None]:
    """(GenerationRequest.reasoning, .reasoning_budget). Both unset for a model without the
    capability; for one with it, unset means the model's default, and a budget of 0 turns
    reasoning off."""
    if not reasons(model):
        return False, None
    if setting is None:
        return True, None  # reasoning models reason unless told otherwise
    if not setting.enabled:
        return False, 0
    return True, setting.budget(max_tokens)


def splits_output(request: object) -> bool:
    """Whether the job runs on a reasoning model, whose output must be split (engine_fields sets
    one of the two fields exactly then)."""
    return isinstance(request, GenerationRequest) and (request.reasoning or request.reasoning_budget is not None)


# ---- answers ----------------------------------------------------------------------------------
class ReasoningTracker:
    """Splits the output as it arrives and counts reasoning tokens where the deltas tell.

    The engine reports cumulative completion tokens with each delta, not per block, so the count
    is exact when the block ends at a delta boundary (the usual case when streaming token by
    token: `</think>` is one token for R1 and Qwen3), when the output never leaves the block, or
    when there is no block; otherwise it is unknown (None) rather than guessed.
    """

    def __init__(self, implicit_open: bool = False):
        self._splitter = ThinkSplitter(implicit_open)
        self._tokens = 0  # completion tokens at the end of the previous delta
        self.reasoning_tokens: int | None = 0
        self.reasoning_text: list[str] = []

    def feed(self, text: str, completion_tokens: int) -> tuple[str, str]:
        before = self._splitter.phase
        reasoning, answer = self._splitter.feed(text)
        after = self._splitter.phase
        if after == "reasoning":
            self.reasoning_tokens = completion_tokens
        elif before in ("start", "reasoning") and self._splitter.opened_block:
            # This delta closed the block: exact if no answer text shares it with the closing tag,
            # or if it is a single token.
            closing_only = not answer or completion_tokens - self._tokens <= 1
            self.reasoning_tokens = completion_tokens if closing_only else None
        self._tokens = completion_tokens
        if reasoning:
            self.reasoning_text.append(reasoning)
        return reasoning, answer

    def finish(self, completion_tokens: int) -> tuple[str, str]:
        reasoning, answer = self._splitter.finish()
        if self._splitter.phase == "reasoning":
            self.reasoning_tokens = completion_tokens  # unterminated: everything was reasoning
        if reasoning:
            self.reasoning_text.append(reasoning)
        return reasoning, answer

    def split(self, text: str, completion_tokens: int) -> tuple[str, str]:
        """A whole output at once (non-streaming): (reasoning, answer)."""
        reasoning, answer = self.feed(text, completion_tokens)
        more_reasoning, more_answer = self.finish(completion_tokens)
        return reasoning + more_reasoning, answer + more_answer

    @property
    def reasoned(self) -> bool:
        return bool(self.reasoning_text)
