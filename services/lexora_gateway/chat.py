"""Chat completions, protocol-free: request -> internal job, outcome -> OpenAI objects. Pure."""

from __future__ import annotations

import time
import uuid
from typing import Any

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn, GenerationRequest, Identity
from lexora_contracts.money import ceil_micro, pico_to_usd, request_cost_pico
from lexora_contracts.openai import DEFAULT_MAX_TOKENS, ChatCompletionRequest
from lexora_contracts.registry import ModelRecord

# Role markers and separators a chat template adds per message, beyond the message text.
PER_MESSAGE_OVERHEAD_TOKENS = 8


def new_request_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def resolve_max_tokens(body: ChatCompletionRequest, model: ModelRecord) -> int:
    requested = body.requested_max_tokens()
    if requested is None:
        return min(DEFAULT_MAX_TOKENS, model.context_length)
    if requested > model.context_length:
        raise InvalidRequest(
            f"max_tokens is {requested}, but {model.id} has a context of {model.context_length} tokens",
            param="max_tokens",
        )
    return requested


def prompt_token_bound(body: ChatCompletionRequest, model: ModelRecord) -> int:
    """An upper bound on prompt tokens without tokenizing: a byte-level BPE token is at least one
    byte of text, and the template adds a bounded number of special tokens."""
    text_bytes = sum(len(m.text().encode()) for m in body.messages)
    return text_bytes + PER_MESSAGE_OVERHEAD_TOKENS * len(body.messages) + model.template_overhead_tokens


def reservation_micro(body: ChatCompletionRequest, model: ModelRecord, max_tokens: int) -> int:
    """Credit to hold before dispatch: the most this request can cost, plus one micro-USD for the
    sub-micro remainder the account may carry. Free models hold nothing."""
    if model.pricing.is_free:
        return 0
    bound = request_cost_pico(
        prompt_token_bound(body, model),
        max_tokens,
        model.pricing.input_micro_per_mtok,
        model.pricing.output_micro_per_mtok,
    )
    return ceil_micro(bound) + 1


def generation_request(
    body: ChatCompletionRequest,
    model: ModelRecord,
    identity: Identity,
    request_id: str,
    max_tokens: int,
    reserved_micro: int,
    received_at: float,
    job_timeout_s: float,
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        account_id=identity.account_id,
        key_id=identity.key_id,
        model=model.id,
        messages=[ChatTurn(role=_engine_role(m.role), content=m.text()) for m in body.messages],
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        stream=body.stream,
        deadline=received_at + job_timeout_s,
        pricing=model.pricing,
        reserved_micro=reserved_micro,
        received_at=received_at,
    )


def _engine_role(role: str) -> str:
    return "system" if role == "developer" else role


def usage_block(prompt_tokens: int, completion_tokens: int, cost_pico: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": pico_to_usd(cost_pico),
    }


def completion_body(
    request_id: str, model: str, created: int, text: str, finish_reason: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


def chunk_body(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    with_choice: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        if with_choice
        else [],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def openai_finish_reason(engine_reason: str | None) -> str:
    # The engine says "cancelled" only when the client went away; nobody reads that answer.
    return engine_reason if engine_reason in ("stop", "length") else "stop"


def now_s() -> int:
    return int(time.time())
