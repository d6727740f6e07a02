"""OpenAI chat completions <-> chat jobs. Pure: no I/O."""

from __future__ import annotations

import uuid
from typing import Any

from lexora_contracts.messages import ChatTurn
from lexora_contracts.money import pico_to_usd
from lexora_contracts.openai import ChatCompletionRequest
from lexora_gateway.jobs import ChatJob

ENDPOINT = "/v1/chat/completions"


def new_request_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def to_job(body: ChatCompletionRequest) -> ChatJob:
    return ChatJob(
        model=body.model,
        messages=[ChatTurn(role=_engine_role(m.role), content=m.text()) for m in body.messages],
        max_tokens=body.requested_max_tokens(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        stream=body.stream,
        endpoint=ENDPOINT,
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
