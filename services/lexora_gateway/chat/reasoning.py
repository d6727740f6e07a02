"""Reasoning ("thinking"), protocol-free: the one setting the OpenAI `reasoning`/`reasoning_effort`
and the Anthropic `thinking` parameters translate into, what of it reaches the engine, and the
pieces both protocols render the answer with. Pure: no I/O.

Models without the "reasoning" capability ignore the setting (it is still validated). For models
with it, the engine gets `GenerationRequest.reasoning` / `reasoning_budget` and the gateway splits
the output at the model's `<think>...</think>` (think_tags.py) into reasoning and answer.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import GenerationRequest
from lexora_contracts.registry import ModelRecord
from lexora_gateway.anthropic.schemas import CountTokensRequest, MessagesRequest
from lexora_gateway.chat.think_tags import ThinkSplitter
from lexora_gateway.openai.schemas import DEFAULT_MAX_TOKENS, ChatCompletionRequest, ReasoningConfig

REASONING_CAPABILITY = "reasoning"
# Share of max_tokens an effort level may spend thinking (OpenRouter's conversion of effort to a
# token budget for models that take a budget). Anthropic's `output_config.effort` adds "xhigh" and
# "max"; they take larger shares that still leave the answer a twentieth of max_tokens, since a
# budget of all of it would leave a model that thinks to the limit no room to answer.
EFFORT_SHARE = {"low": 0.2, "medium": 0.5, "high": 0.8, "xhigh": 0.9, "max": 0.95}


@dataclass(frozen=True)
class ReasoningSetting:
    """What the client asked for. Absent (None on the job): the model's default."""

    enabled: bool
    budget_tokens: int | None = None  # most tokens to spend thinking; None: the model's default
    # Reason, but leave the reasoning text out of the answer: OpenAI's `reasoning.exclude` (no
    # reasoning fields), Anthropic's `thinking.display: "omitted"` (thinking blocks, empty).
    exclude: bool = False


# ---- requests ---------------------------------------------------------------------------------
def from_openai(body: ChatCompletionRequest) -> ReasoningSetting | None:
    """`reasoning` {effort, max_tokens, enabled, exclude} and the `reasoning_effort` shorthand."""
    config, shorthand = body.reasoning, body.reasoning_effort
    if config is None and shorthand is None:
        return None
    config = config or ReasoningConfig()
    if shorthand is not None and config.effort is not None and shorthand != config.effort:
        raise InvalidRequest(
            f"reasoning_effort '{shorthand}' and reasoning.effort '{config.effort}' disagree; send one of them",
            param="reasoning_effort",
        )
    effort = config.effort or shorthand
    requested = body.requested_max_tokens()
    ceiling = requested or DEFAULT_MAX_TOKENS
    budget = config.max_tokens
    if budget is not None and budget >= ceiling:
        # The documented example asks for a 512-token budget with max_tokens 256: the budget is
        # capped below max_tokens, leaving room for the answer, rather than refused.
        budget = max(ceiling - 1, 1)
    off = config.enabled is False or budget == 0
    if off:
        if config.enabled is True or effort is not None or budget:
            switch = "reasoning.enabled is false" if config.enabled is False else "reasoning.max_tokens is 0"
            raise InvalidRequest(
                f"{switch}, which turns reasoning off, but the request also asks for reasoning",
                param="reasoning.enabled" if config.enabled is False else "reasoning.max_tokens",
            )
        return ReasoningSetting(enabled=False, budget_tokens=0, exclude=config.exclude)
    if budget is None and effort is not None:
        budget = max(1, int(ceiling * EFFORT_SHARE[effort]))
    return ReasoningSetting(enabled=True, budget_tokens=budget, exclude=config.exclude)


def from_anthropic(body: MessagesRequest) -> ReasoningSetting | None:
    """`thinking` {type: enabled|disabled|adaptive, budget_tokens, display} and
    `output_config.effort`. `enabled` thinks within budget_tokens; `adaptive` lets the model decide,
    which for us is reasoning on at the model's default budget. Without budget_tokens, an effort
    sets the budget as a share of max_tokens (EFFORT_SHARE). Without `thinking`, effort changes
    nothing: the model's default stands, as Anthropic's does not think unless asked."""
    thinking = body.thinking
    if thinking is None:
        return None
    if thinking.type == "disabled":
        return ReasoningSetting(enabled=False, budget_tokens=0)
    budget = thinking.budget_tokens if thinking.type == "enabled" else None
    if budget is not None and budget >= body.max_tokens:
        raise InvalidRequest(
            f"thinking.budget_tokens ({budget}) must be less than max_tokens ({body.max_tokens})",
            param="thinking.budget_tokens",
        )
    effort = body.output_config.effort if body.output_config else None
    if budget is None and effort is not None:
        budget = max(1, int(body.max_tokens * EFFORT_SHARE[effort]))
    return ReasoningSetting(enabled=True, budget_tokens=budget, exclude=thinking.display == "omitted")


def count_budget(body: CountTokensRequest, model: ModelRecord) -> int | None:
    """The reasoning budget to count a prompt with: what the same `thinking` would send in a
    messages request (its bounds are that request's business), so the count matches the bill. A
    count has no max_tokens to take an effort's share of; what shapes the prompt is whether the
    model thinks (budget > 0) or not, so an effort counts with the least budget that says so."""
    thinking, setting = body.thinking, None
    if thinking is not None:
        budget = thinking.budget_tokens if thinking.type == "enabled" else None
        if budget is None and body.output_config and body.output_config.effort:
            budget = 1
        setting = ReasoningSetting(enabled=thinking.type != "disabled", budget_tokens=budget)
    return engine_fields(setting, model)[1]


def engine_fields(setting: ReasoningSetting | None, model: ModelRecord) -> tuple[bool, int | None]:
    """(GenerationRequest.reasoning, .reasoning_budget). Both unset for a model without the
    capability; for one with it, unset means the model's default, and a budget of 0 turns
    reasoning off."""
    if REASONING_CAPABILITY not in model.capabilities:
        return False, None
    if setting is None:
        return True, None  # reasoning models reason unless told otherwise
    if not setting.enabled:
        return False, 0
    return True, setting.budget_tokens


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


def openai_reasoning_fields(reasoning: str, exclude: bool) -> dict[str, str]:
    """The message (or delta) fields carrying reasoning: OpenRouter's `reasoning` and, for clients
    written against DeepSeek's API, `reasoning_content`. Omitted when empty or excluded."""
    if not reasoning or exclude:
        return {}
    return {"reasoning": reasoning, "reasoning_content": reasoning}


def with_reasoning_tokens(usage: dict[str, Any], reasoning_tokens: int | None) -> dict[str, Any]:
    """OpenAI's usage with `completion_tokens_details.reasoning_tokens`, when the count is known."""
    if reasoning_tokens is None:
        return usage
    return {**usage, "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}


def thinking_signature(message_id: str, thinking: str) -> str:
    """The `signature` Anthropic's SDK expects on a thinking block. Thinking blocks sent back are
    not fed to the model (see anthropic.translation), so this is an opaque digest, not a secret."""
    digest = hashlib.sha256(f"{message_id}\n{thinking}".encode()).digest()
    return base64.b64encode(digest).decode()


def thinking_block(message_id: str, thinking: str, omitted: bool = False) -> dict[str, Any]:
    """`omitted` (thinking.display): the block stays, with empty text; the signature is the same."""
    signature = thinking_signature(message_id, thinking)
    return {"type": "thinking", "thinking": "" if omitted else thinking, "signature": signature}
