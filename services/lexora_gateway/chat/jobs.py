"""A chat job, protocol-free: what the OpenAI and Anthropic routes both translate into, and the
pure decisions made about it before dispatch (limits, the credit hold, the engine request)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lexora_contracts.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from lexora_contracts.messages import ChatTurn, GenerationRequest, Identity
from lexora_contracts.money import ceil_micro, request_cost_pico
from lexora_contracts.registry import ModelKind, ModelRecord, Pricing
from lexora_gateway.chat import image_inputs
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.reasoning import ReasoningSetting, engine_fields
from lexora_gateway.chat.tools import ToolUse, guide, with_instructions
from lexora_gateway.openai.schemas import DEFAULT_MAX_TOKENS

# Role markers and separators a chat template adds per message, beyond the message text.
PER_MESSAGE_OVERHEAD_TOKENS = 8
_A_KIND = {"chat": "a chat", "embedding": "an embedding", "image": "an image"}


@dataclass
class ChatJob:
    model: str
    messages: list[ChatTurn]
    max_tokens: int | None  # None: the default, within the model's context
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


def chat_model(model: ModelRecord | None, model_id: str) -> ModelRecord:
    """The registry record to serve a chat job with, or the error the client should see."""
    return serving_model(model, model_id, "chat")


def serving_model(model: ModelRecord | None, model_id: str, kind: ModelKind) -> ModelRecord:
    """The registry record to serve a job of `kind` with, or the error the client should see."""
    if model is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist; GET /v1/models lists them", param="model")
    if model.kind != kind:
        raise InvalidRequest(f"'{model_id}' is {_A_KIND[model.kind]} model, not {_A_KIND[kind]} model", param="model")
    if not model.ready_endpoints:
        if model.deployed_endpoints:  # deployed, but the router saw its engine fail
            raise ModelUnavailable(f"{model.id} cannot serve right now: its engine is failing; retry in 30 seconds")
        raise ModelUnavailable(f"No ready instance of {model.id}; retry in 30 seconds")
    return model


def resolve_max_tokens(job: ChatJob, model: ModelRecord) -> int:
    if job.max_tokens is None:
        return min(DEFAULT_MAX_TOKENS, model.context_length)
    if job.max_tokens > model.context_length:
        raise InvalidRequest(
            f"max_tokens is {job.max_tokens}, but {model.id} has a context of {model.context_length} tokens",
            param="max_tokens",
        )
    return job.max_tokens


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


def job_header(
    model: ModelRecord,
    pricing: Pricing,
    identity: Identity,
    request_id: str,
    reserved_micro: int,
    received_at: float,
    job_timeout_s: float,
) -> dict[str, Any]:
    """The `JobHeader` fields every router job carries: who pays, at what price, the hold, the deadline."""
    return {
        "request_id": request_id,
        "account_id": identity.account_id,
        "key_id": identity.key_id,
        "model": model.id,
        "deadline": received_at + job_timeout_s,
        "pricing": pricing,
        "reserved_micro": reserved_micro,
        "received_at": received_at,
    }


def generation_request(
    job: ChatJob,
    model: ModelRecord,
    pricing: Pricing,
    identity: Identity,
    request_id: str,
    max_tokens: int,
    reserved_micro: int,
    received_at: float,
    job_timeout_s: float,
) -> GenerationRequest:
    # A forced tool call decides the output's shape; otherwise the requested response format does.
    guide_type, guide_text = guide(job.tools) or job.output_guide or (None, None)
    # A raw prompt has no chat template to think in: reasoning is a chat matter.
    reasoning, reasoning_budget = engine_fields(job.reasoning, model) if job.raw_prompt is None else (False, None)
    return GenerationRequest(
        messages=job.engine_messages(),
        raw_prompt=job.raw_prompt,
        guide_type=guide_type,
        guide=guide_text,
        reasoning=reasoning,
        reasoning_budget=reasoning_budget,
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
        **job_header(model, pricing, identity, request_id, reserved_micro, received_at, job_timeout_s),
    )
