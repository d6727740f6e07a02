"""Legacy /v1/completions with a list of prompts: one choice per prompt.

Each prompt is its own job (request id `<id>-<i>`), with its own credit hold, its own usage record
and its own exactly-once charge; the response's usage is their sum. The jobs run concurrently.

All or nothing, as far as it can be:
- Limits: the HTTP request counts once against the caller's request limits.
- Credit: every prompt's hold is placed before any job starts. If one is refused (402, a key's
  spend limit), the holds already placed are released and nothing runs or is charged.
- Failure: if a prompt fails (before or during its output), the request fails with that error.
  The failed prompt is not charged; the others are stopped at once and, like a client that went
  away, charged only for the tokens their engine had produced (a prompt that had already
  finished is charged in full: its tokens were produced).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import InternalError, InvalidRequest, LexoraError
from lexora_contracts.messages import GenerationChunk, Identity
from lexora_gateway.admission.admit import Admitted, JobSpec, admit_and_hold_all
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.dispatch import chunks, collect, first_output, job_stream
from lexora_gateway.errors import sse_error_event
from lexora_gateway.http import JSONBody
from lexora_gateway.openai import translation
from lexora_gateway.openai.schemas import CompletionRequest
from lexora_gateway.state import GatewayState
from lexora_router.client import GenerationStream
from lexora_runtime.logs import request_id_var

T = TypeVar("T")
Run = tuple[GenerationStream, GenerationChunk]


def is_single(body: CompletionRequest) -> bool:
    """One text prompt: served by the plain completion route, with its plain request id."""
    prompt = body.prompt
    return isinstance(prompt, str) or (len(prompt) == 1 and isinstance(prompt[0], str))


def prompt_list(body: CompletionRequest, max_prompts: int) -> list[str]:
    prompts = body.prompt_texts()
    if prompts is None:
        raise InvalidRequest(
            "Prompts given as token ids are not supported; send the prompt as text (a string or a list of strings)",
            param="prompt",
        )
    if len(prompts) > max_prompts:
        raise InvalidRequest(f"At most {max_prompts} prompts per request; this one has {len(prompts)}", param="prompt")
    return prompts


def sub_request_id(request_id: str, index: int) -> str:
    return f"{request_id}-{index}"


async def complete(
    http: Request, state: GatewayState, identity: Identity, body: CompletionRequest, received_at: float
) -> Response:
    prompts = prompt_list(body, state.settings.max_prompts_per_request)
    request_id = translation.new_request_id("cmpl")
    request_id_var.set(request_id)
    batch = [translation.completion_to_job(body.model_copy(update={"prompt": prompt})) for prompt in prompts]
    runs = await _start_all(http, state, identity, batch, request_id, received_at)
    headers = {"X-Request-Id": request_id}
    model_id, created = runs[0][0].request.model, int(received_at)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _sse(runs, request_id, model_id, created, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        answers = await _all_or_first_error([collect(stream, first) for stream, first in runs])
    finally:
        await asyncio.gather(*(stream.release() for stream, _ in runs))
    choices = [
        _choice(index, text, translation.openai_finish_reason(done.finish_reason))
        for index, (text, done) in enumerate(answers)
    ]
    usage = summed_usage([done for _, done in answers])
    return JSONBody(
        {**translation.text_completion_body(request_id, model_id, created, "", None, usage), "choices": choices},
        headers=headers,
    )


def summed_usage(finals: Sequence[GenerationChunk]) -> dict[str, Any]:
    return translation.usage_block(
        sum(done.prompt_tokens for done in finals),
        sum(done.completion_tokens for done in finals),
        sum(done.cost_pico for done in finals),
    )


def _choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


# ---- starting: hold every prompt's credit, then dispatch them all -------------------------------
async def _start_all(
    http: Request,
    state: GatewayState,
    identity: Identity,
    batch: list[ChatJob],
    request_id: str,
    received_at: float,
) -> list[Run]:
    specs = [JobSpec(identity, sub_request_id(request_id, i), received_at, job) for i, job in enumerate(batch)]
    admitted = await admit_and_hold_all(http, state, specs)
    streams = [job_stream(state, one) for one in admitted]

    async def start(one: Admitted, stream: GenerationStream) -> Run:
        return stream, await first_output(state, one, stream)

    try:
        return await _all_or_first_error([start(one, stream) for one, stream in zip(admitted, streams, strict=True)])
    except BaseException:
        await asyncio.gather(*(stream.release() for stream in streams))
        raise


async def _all_or_first_error(work: list[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise it (the lowest prompt's
    error when several failed together)."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    failed = [task.exception() for task in tasks if not task.cancelled() and task.exception() is not None]
    if failed:
        raise failed[0]  # type: ignore[misc]
    return [task.result() for task in tasks]


# ---- streaming: the prompts' chunks interleaved, each tagged with its choice index ---------------
def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _pump(index: int, run: Run, out: asyncio.Queue[tuple[int, GenerationChunk | LexoraError]]) -> None:
    stream, first = run
    try:
        async for chunk in chunks(stream, first):
            await out.put((index, chunk))
    except LexoraError as exc:
        await out.put((index, exc))
    except Exception:
        await out.put((index, InternalError("Internal error")))


async def _sse(
    runs: list[Run], request_id: str, model_id: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[tuple[int, GenerationChunk | LexoraError]] = asyncio.Queue()
    pumps = [asyncio.create_task(_pump(index, run, queue)) for index, run in enumerate(runs)]
    finals: list[GenerationChunk] = []

    def body(choice: dict[str, Any], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            **translation.text_completion_body(request_id, model_id, created, "", None, usage),
            "choices": [choice],
        }

    try:
        while len(finals) < len(runs):
            index, item = await queue.get()
            if isinstance(item, LexoraError):
                yield sse_error_event(item)
                return
            if item.kind == "delta" and item.text:
                yield _event(body(_choice(index, item.text, None)))
            elif item.kind == "done":
                finals.append(item)
                last = len(finals) == len(runs)
                usage = summed_usage(finals) if last and not include_usage else None
                yield _event(body(_choice(index, "", translation.openai_finish_reason(item.finish_reason)), usage))
        if include_usage:
            yield _event({**body({}, summed_usage(finals)), "choices": []})
        yield b"data: [DONE]\n\n"
    finally:
        # Also reached when the client went away: stop every engine still generating.
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await asyncio.gather(*(stream.release() for stream, _ in runs))
