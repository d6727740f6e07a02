"""OpenAI's embeddings and image generation routes. Thin: parse, admit, dispatch, shape."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lexora_gateway.admission.admit import JobSpec, admit_and_hold
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.dispatch import run_binary_job
from lexora_gateway.http import JSONBody, ReceivedAt, parse_body
from lexora_gateway.media import embedding_jobs, image_jobs
from lexora_gateway.media.schemas import EmbeddingsRequest, ImageGenerationRequest
from lexora_gateway.openai import translation
from lexora_gateway.state import StateDep

router = APIRouter()


@router.post("/embeddings", response_model=None)
async def embeddings(request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep) -> Response:
    body = parse_body(EmbeddingsRequest, await request.body())
    request_id = translation.new_request_id("embd")
    spec = JobSpec(identity, request_id, received_at, embedding_jobs.Embeddings(body))
    admitted = await admit_and_hold(request, state, spec)
    vectors, done = await run_binary_job(state, admitted)
    return JSONBody(
        embedding_jobs.embeddings_body(
            admitted.request.model, vectors, len(body.texts()), body.encoding_format, done.prompt_tokens, done.cost_pico
        ),
        headers={"X-Request-Id": request_id},
    )


@router.post("/images/generations", response_model=None)
async def image_generations(
    request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep
) -> Response:
    body = parse_body(ImageGenerationRequest, await request.body())
    request_id = translation.new_request_id("img")
    spec = JobSpec(identity, request_id, received_at, image_jobs.ImageGeneration(body))
    png, done = await run_binary_job(state, await admit_and_hold(request, state, spec))
    return JSONBody(
        image_jobs.image_body(body, png, int(received_at), done.images, done.cost_pico),
        headers={"X-Request-Id": request_id},
    )
