"""A chat job, protocol-free: what the OpenAI and Anthropic routes both translate into, fitted to
its model once that is known (images fetched, max_tokens settled), and the pure decisions made
about it before dispatch (the credit hold, the engine request). It is a workload for
lexora_gateway.admission.admit, as the embedding and image jobs are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from lexora_contracts import subjects
from lexora_contracts.messages import ChatTurn, GenerationChunk, GenerationRequest
from lexora_contracts.money import ceil_micro, request_cost_pico
from lexora_contracts.registry import ModelKind, ModelRecord, Pricing
from lexora_gateway.chat import image_inputs, vision
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.reasoning import ReasoningSetting, engine_fields
from lexora_gateway.chat.tools import GUIDED_DECODING_CAPABILITY, ToolUse, guide, with_instructions

if TYPE_CHECKING:
    from lexora_gateway.state import GatewayState

# max_tokens when the client gives none, within the model's context.
DEFAULT_MAX_TOKENS = 512
MAX_TOKENS_CLAMPED_HEADER = "x-lexora-max-tokens-clamped"
# Role markers and separators a chat template adds per message, beyond the message text.
PER_MESSAGE_OVERHEAD_TOKENS = 8


@dataclass
class ChatJob:
    kind: ClassVar[ModelKind] = "chat"
    subject: ClassVar[str] = subjects.ROUTER_GENERATION_START

    model: str
    messages: list[ChatTurn]
    max_tokens: int | None  # None: the default, settled when the model is known (resolve_max_tokens)
    temperature: float
    top_p: float
    stream: bool
    endpoint: str
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    tools: ToolUse = field(default_factory=ToolUse)
    # Guided decoding the client asked for (e.g. a JSON response format): (type, guide text).
    output_guide: tuple[str, str] | None = None
    raw_prompt: str | None = None  # legacy completions: no chat template, no messages
    reasoning: ReasoningSetting | None = None  # None: the model's default (see reasoning.py)
    # The request's images, in order: checked, fetched and put on their turns before the credit
    # hold (lexora_gateway.chat.vision); vision models only.
    images: list[PendingImage] = field(default_factory=list)

    def engine_messages(self) -> list[ChatTurn]:
        """What the model reads: the conversation, with the tools described when offered."""
        return with_instructions(self.messages, self.tools)

    async def fit(self, model: ModelRecord, state: GatewayState) -> SizedChatJob:
        """The job made to fit its model, before any credit is held: its images checked (refused
        without vision) and fetched, its max_tokens settled. Refusals are 400s."""
        await vision.prepare(self.images, model, state.settings, state.nc.max_payload)
        return SizedChatJob(self, resolve_max_tokens(self, model))


@dataclass(frozen=True)
class SizedChatJob:
    """A chat job fitted to its model: max_tokens known."""

    job: ChatJob
    max_tokens: int

    def reservation_micro(self, model: ModelRecord, pricing: Pricing) -> int:
        return reservation_micro(self.job, model, pricing, self.max_tokens)

    def engine_request(self, model: ModelRecord, header: dict[str, Any]) -> GenerationRequest:
        return generation_request(self.job, model, self.max_tokens, header)


def resolve_max_tokens(job: ChatJob, model: ModelRecord) -> int:
    """The max_tokens sent to the engine and held for: the client's, or the default, never past the
    model's context. A larger one is clamped, not refused (coding agents ask for 32000 whatever the
    model); the engine clamps it again to what the prompt leaves, once it has tokenized it, and the
    router reports that (GenerationChunk.max_tokens). The hold covers this bound, so it covers
    whatever the engine produces."""
    if job.max_tokens is None:
        return min(DEFAULT_MAX_TOKENS, model.context_length)
    return min(job.max_tokens, model.context_length)


def max_tokens_headers(job: ChatJob, sent: GenerationRequest, first: GenerationChunk) -> dict[str, str]:
    """`x-lexora-max-tokens-clamped: <the max_tokens the job runs with>` when that is below what the
    client asked for (the model's context, or the room its prompt leaves, was smaller)."""
    if job.max_tokens is None:
        return {}
    effective = first.max_tokens if first.max_tokens is not None else sent.max_tokens
    return {MAX_TOKENS_CLAMPED_HEADER: str(effective)} if effective < job.max_tokens else {}


def prompt_token_bound(job: ChatJob, model: ModelRecord) -> int:
    """An upper bound on prompt tokens without tokenizing: a byte-level BPE token is at least one
    byte of text, the template adds a bounded number of special tokens, and an image counts as
    image_inputs.IMAGE_PROMPT_TOKENS."""
    if job.raw_prompt is not None:
        return len(job.raw_prompt.encode()) + model.template_overhead_tokens
    messages = job.engine_messages()
    text_bytes = sum(len(m.content.encode()) for m in messages)
    images = max(len(job.images), image_inputs.count(messages)) * image_inputs.IMAGE_PROMPT_TOKENS
    return text_bytes + images + PER_MESSAGE_OVERHEAD_TOKENS * len(messages) + model.template_overhead_tokens


def reservation_micro(job: ChatJob, model: ModelRecord, pricing: Pricing, max_tokens: int) -> int:
    """Credit to hold before dispatch: the most this request can cost, plus one micro-USD for the
    sub-micro remainder the account may carry. Free models hold nothing."""
    if pricing.is_free:
        return 0
    bound = request_cost_pico(
        prompt_token_bound(job, model),
        max_tokens,
        pricing.input_micro_per_mtok,
        pricing.output_micro_per_mtok,
    )
    return ceil_micro(bound) + 1


def generation_request(job: ChatJob, model: ModelRecord, max_tokens: int, header: dict[str, Any]) -> GenerationRequest:
    """What the router is sent; `header` is the JobHeader every job carries (admission.admit.job_header)."""
    # Offered tools decide the output's shape (prose or calls); otherwise the requested response format.
    guided = GUIDED_DECODING_CAPABILITY in model.capabilities
    guide_type, guide_text = guide(job.tools, guided) or job.output_guide or (None, None)
    # A raw prompt has no chat template to think in: reasoning is a chat matter.
    reasoning, budget = engine_fields(job.reasoning, model, max_tokens) if job.raw_prompt is None else (False, None)
    return GenerationRequest(
        messages=job.engine_messages(),
        raw_prompt=job.raw_prompt,
        guide_type=guide_type,
        guide=guide_text,
        reasoning=reasoning,
        reasoning_budget=budget,
        max_tokens=max_tokens,
        temperature=job.temperature,
        top_p=job.top_p,
        top_k=job.top_k,
        frequency_penalty=job.frequency_penalty,
        presence_penalty=job.presence_penalty,
        seed=job.seed,
        stop=job.stop,
        stream=job.stream,
        endpoint=job.endpoint,
        **header,
    )
