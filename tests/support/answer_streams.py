"""Answers without a router: a chat job's engine request and a stream of scripted chunks, which the
gateway's answer renderers read as they would a router's (tests/unit)."""

from __future__ import annotations

import json
from typing import Any

from lexora_contracts.messages import GenerationChunk, GenerationRequest, Identity
from lexora_contracts.registry import Endpoint, ModelRecord, Pricing
from lexora_gateway.admission.admit import JobSpec, job_header
from lexora_gateway.chat import jobs

PLAIN = ModelRecord(
    id="plain",
    triton_model="plain",
    context_length=4096,
    pricing=Pricing(input_micro_per_mtok=40_000, output_micro_per_mtok=40_000),
    capabilities=["chat"],
    endpoints=[Endpoint(name="a", grpc_address="127.0.0.1:1")],
)
THINKER = PLAIN.model_copy(update={"id": "thinker", "capabilities": ["chat", "reasoning"]})
IDENTITY = Identity(account_id="a", key_id="k", plan="pro")


def engine_request(
    job: jobs.ChatJob, model: ModelRecord, max_tokens: int, request_id: str = "r", received_at: float = 0.0
) -> GenerationRequest:
    header = job_header(JobSpec(IDENTITY, request_id, received_at, job), model, model.pricing, 0, 120)
    return jobs.generation_request(job, model, max_tokens, header)


class FakeStream:
    """What the answer renderers read: the request, then chunks as a router would send them."""

    def __init__(self, request: GenerationRequest, chunks: list[GenerationChunk]):
        self.request = request
        self._chunks = chunks
        self.released = False

    async def next(self) -> GenerationChunk:
        return self._chunks.pop(0)

    async def release(self) -> None:
        self.released = True


def run_of(job: jobs.ChatJob, tokens: list[str], model: ModelRecord = THINKER) -> tuple[FakeStream, GenerationChunk]:
    """The job's stream, answering `tokens` one delta each, and its first chunk."""
    request = engine_request(job, model, 512, "req-1", 1000.0)
    chunks = [
        GenerationChunk(kind="delta", text=t, prompt_tokens=5, completion_tokens=i + 1) for i, t in enumerate(tokens)
    ]
    done = GenerationChunk(
        kind="done", prompt_tokens=5, completion_tokens=len(tokens), finish_reason="stop", cost_pico=7
    )
    stream = FakeStream(request, [*chunks[1:], done])
    return stream, chunks[0]


async def body_of(response: Any) -> bytes:
    if hasattr(response, "body_iterator"):
        return b"".join([part async for part in response.body_iterator])
    return bytes(response.body)


def sse_data(raw: bytes) -> list[Any]:
    lines = [line[len("data: ") :] for line in raw.decode().split("\n") if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]
