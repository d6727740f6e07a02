"""OpenAI's embeddings and image generation routes. Thin: parse, hold credit, run, shape."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lexora_contracts import subjects
from lexora_contracts.registry import ModelRecord, Pricing
from lexora_gateway.admission.admit import JobTicket, collect_binary, start_job
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.chat import jobs
from lexora_gateway.http import JSONBody, ReceivedAt, parse_body
from lexora_gateway.media import embedding_jobs, image_jobs
from lexora_gateway.media.schemas import EmbeddingsRequest, ImageGenerationRequest
from lexora_gateway.openai import translation
from lexora_gateway.state import StateDep
from lexora_router.client import Job

router = APIRouter()


@router.post("/embeddings", response_model=None)
async def embeddings(request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep) -> Response:
    body = parse_body(EmbeddingsRequest, await request.body())
    request_id = translation.new_request_id("embd")
    texts = body.texts()

    def prepare(model: ModelRecord, pricing: Pricing) -> tuple[int, Callable[[int], Job]]:
        embedding_jobs.check_dimensions(body, model)
        timeout = state.settings.job_timeout_s
        return embedding_jobs.embedding_reservation_micro(
            texts, model, pricing
        ), lambda held: embedding_jobs.embedding_job(
            body, jobs.job_header(model, pricing, identity, request_id, held, received_at, timeout)
        )

    ticket = JobTicket(
        body.model, "embedding", "/v1/embeddings", False, request_id, received_at, subjects.ROUTER_EMBEDDING_CREATE
    )
    stream, first = await start_job(request, state, identity, ticket, prepare)
    try:
        vectors, done = await collect_binary(stream, first)
    finally:
        await stream.release()
    return JSONBody(
        embedding_jobs.embeddings_body(
            stream.request.model, vectors, len(texts), body.encoding_format, done.prompt_tokens, done.cost_pico
        ),
        headers={"X-Request-Id": request_id},
    )


@router.post("/images/generations", response_model=None)
async def image_generations(
    request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep
) -> Response:
    body = parse_body(ImageGenerationRequest, await request.body())
    request_id = translation.new_request_id("img")

    def prepare(model: ModelRecord, pricing: Pricing) -> tuple[int, Callable[[int], Job]]:
        timeout = state.settings.job_timeout_s
        return image_jobs.image_reservation_micro(pricing), lambda held: image_jobs.image_job(
            body, jobs.job_header(model, pricing, identity, request_id, held, received_at, timeout)
        )

    ticket = JobTicket(
        body.model, "image", "/v1/images/generations", False, request_id, received_at, subjects.ROUTER_IMAGE_CREATE
    )
    stream, first = await start_job(request, state, identity, ticket, prepare)
    try:
        png, done = await collect_binary(stream, first)
    finally:
        await stream.release()
    return JSONBody(
        image_jobs.image_body(body, png, int(received_at), done.images, done.cost_pico),
        headers={"X-Request-Id": request_id},
    )
