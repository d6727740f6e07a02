"""One generation job: route it, stream its tokens to the caller's inbox, record its outcome.

The router that accepted a job is the only one that reports its outcome: exactly one UsageEvent
per job, published to JetStream (deduplicated by request id) before the caller sees the final
message, so a completed request is durably on record before its answer is.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from lexora_contracts.errors import (
    ContextLengthExceeded,
    EngineFailure,
    InternalError,
    InvalidRequest,
    JobTimeout,
    LexoraError,
    ModelUnavailable,
)
from lexora_contracts.messages import (
    CountTokensReply,
    CountTokensRequest,
    EmbeddingJob,
    GenerationChunk,
    GenerationRequest,
    ImageJob,
    JobHeader,
    UsageEvent,
)
from lexora_contracts.money import PICO_PER_USD, image_cost_pico, request_cost_pico
from lexora_contracts.registry import Endpoint, EndpointHealth, ModelRecord
from lexora_router import triton_media
from lexora_router.endpoint_health import HealthBook
from lexora_router.engine_load import EngineLoad
from lexora_router.model_holds import ModelHolds
from lexora_router.prefix_affinity import prefix_keys
from lexora_router.ready_batches import ready_batches
from lexora_router.routing import Load, Route, RoutingPolicy
from lexora_router.triton_engine import EngineFailed, EngineRejected, EngineUnreachable, TritonEngine
from lexora_router.triton_media import Embeddings
from lexora_runtime import tracing
from lexora_runtime.bus import encode, publish_usage_event
from lexora_runtime.metrics import ServiceMetrics
from lexora_runtime.model_registry import ModelRegistryView

log = logging.getLogger("lexora.router")

T = TypeVar("T")
BINARY_SLICE_BYTES = 256 * 1024
CLIENT_CLOSED = 499  # nginx's code for "client closed request": charged for what was produced
CLIENT = tracing.SpanKind.CLIENT
# How long a token count waits for a model woken from zero (the gateway gives a count 30 s).
COUNT_HOLD_S = 20.0


@dataclass
class Outcome:
    status_code: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    stop_sequence: str | None = None
    error: LexoraError | None = None
    endpoint: str | None = None
    images: int = 0
    text: str = ""  # a non-streaming client's answer, sent whole in the final chunk
    max_tokens: int | None = None  # the clamped max_tokens, when the prompt left less room (clamped_max_tokens)
    deadline: float = math.inf  # unix time the job must end by
    counted_as: tuple[str, str] | None = None  # where the job is counted in Router.pending


def clamped_max_tokens(requested: int, context_length: int, prompt_tokens: int) -> int | None:
    """The max_tokens an engine runs a job with when the prompt leaves less room in the context than
    was asked for (the engine clamps it, never refuses it); None when it was not clamped."""
    if context_length <= 0 or prompt_tokens <= 0:
        return None
    room = max(context_length - prompt_tokens, 0)
    return room if room < requested else None


@dataclass
class Router:
    nc: NATS
    js: JetStreamContext
    registry: ModelRegistryView
    engine: TritonEngine
    policy: RoutingPolicy
    metrics: ServiceMetrics
    max_endpoint_attempts: int
    max_job_s: float
    health: HealthBook
    publish_health: Callable[[EndpointHealth], Awaitable[None]]
    # Requests outstanding per endpoint (gRPC address): what the policy balances.
    in_flight: Counter[str] = field(default_factory=Counter)
    # Requests this router holds, from start to end, by (model id, ModelDeployment key or ""): under
    # the model's first deployment until an endpoint takes it, then under that endpoint's
    # (lexora_pending_requests, the autoscaler's input).
    pending: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Requests running on a replica, by model id (what the router announces as `running`).
    serving: Counter[str] = field(default_factory=Counter)
    # Each engine's own report of its load, by metrics address (lexora_router.load_scraper).
    engine_load: Mapping[str, EngineLoad] = field(default_factory=dict)
    holds: ModelHolds = field(default_factory=ModelHolds)
    jobs: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    cancelled_by_client: set[str] = field(default_factory=set)
    _publishing: set[asyncio.Task[None]] = field(default_factory=set)

    def cancel(self, request_id: str) -> None:
        task = self.jobs.get(request_id)
        if task is not None and not task.done():
            self.cancelled_by_client.add(request_id)
            task.cancel()

    async def run(
        self, request: JobHeader, reply: str, work: Callable[[Outcome], Awaitable[None]] | None = None
    ) -> None:
        """Run a job (by default: generate text for a GenerationRequest) under its deadline, record
        its outcome exactly once, then send the final chunk."""
        started = time.monotonic()
        queued_ms = (time.time() - request.received_at) * 1000
        outcome = Outcome()
        running = self.metrics.in_flight.labels(request.model)
        running.inc()
        record = self.registry.get(request.model)
        model_id = record.id if record is not None else request.model
        outcome.counted_as = (model_id, _first_deployment(record))
        self.pending[outcome.counted_as] += 1
        timeout = max(min(request.deadline - time.time(), self.max_job_s), 0)
        outcome.deadline = time.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                if work is not None:
                    await work(outcome)
                else:
                    assert isinstance(request, GenerationRequest)
                    await self._generate(request, reply, outcome)
        except TimeoutError:
            outcome.status_code, outcome.error = (
                504,
                JobTimeout("The job took longer than the time limit and was stopped"),
            )
        except asyncio.CancelledError:
            if request.request_id not in self.cancelled_by_client:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            outcome.status_code, outcome.finish_reason = CLIENT_CLOSED, "cancelled"
        except LexoraError as exc:
            outcome.status_code, outcome.error = exc.status, exc
        except Exception:
            # A bug must not leave the caller waiting for the deadline or the job off the record:
            # it ends as a 500, not charged, like any failed job.
            log.exception("job failed unexpectedly")
            outcome.status_code, outcome.error = 500, InternalError("Internal error while running the job")
        finally:
            self.cancelled_by_client.discard(request.request_id)
            running.dec()
            self._uncount(outcome.counted_as)
        cost = self._cost(request, outcome)
        if (span := tracing.current_span()) is not None:  # the job's (lexora_router.app), when traced
            _trace_outcome(span, outcome, cost)
        worked = time.monotonic()
        await self._record(request, outcome, cost, started)
        recorded = time.monotonic()
        if outcome.error is not None:
            await self._send(reply, GenerationChunk(kind="error", error=outcome.error.info()))
        else:
            await self._send(
                reply,
                GenerationChunk(
                    kind="done",
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    finish_reason=outcome.finish_reason,
                    stop_sequence=outcome.stop_sequence,
                    cost_pico=cost,
                    images=outcome.images,
                    text=outcome.text,
                    max_tokens=outcome.max_tokens,
                ),
            )
        log.info(
            "generation finished",
            extra={
                "fields": {
                    "status": outcome.status_code,
                    "model": request.model,
                    "endpoint": outcome.endpoint,
                    "prompt_tokens": outcome.prompt_tokens,
                    "completion_tokens": outcome.completion_tokens,
                    "images": outcome.images,
                    "cost_pico": cost,
                    "ms": int((time.monotonic() - started) * 1000),
                    # where the time went: since the gateway received the request, running the job,
                    # putting its usage event on record
                    "before_ms": round(queued_ms, 2),
                    "work_ms": round((worked - started) * 1000, 2),
                    "record_ms": round((recorded - worked) * 1000, 2),
                }
            },
        )
        self.metrics.requests.labels("router", "generate", str(outcome.status_code)).inc()
        self.metrics.latency.labels("router", "generate").observe(time.monotonic() - started)

    async def _generate(self, request: GenerationRequest, reply: str, outcome: Outcome) -> None:
        # A client that does not stream reads nothing before the end: its answer goes in the final
        # chunk, one message instead of a delta and the final chunk. A streaming client gets a
        # delta per group of outputs: one per output while the router keeps up, and what piled up
        # meanwhile in one message when it falls behind (lexora_router.ready_batches).
        parts: list[str] = []
        record = self.registry.get(request.model)
        context_length = record.context_length if record is not None else 0

        async def stream_from(endpoint: Endpoint, triton_model: str) -> None:
            address = endpoint.grpc_address
            outputs = self.engine.generate(address, triton_model, request, http_address=endpoint.http_address)
            # A thinking model's outputs stay one per delta: the gateway's reasoning_tokens is exact
            # only when the end of the thinking block arrives as a delta of its own.
            grouped = request.stream and not request.reasoning
            groups = ready_batches(outputs) if grouped else _one_by_one(outputs)
            first = True
            async with aclosing(groups):
                async for group in groups:
                    if first:
                        self.metrics.first_token.labels(request.model).observe(time.time() - request.received_at)
                        first = False
                    last = group[-1]
                    outcome.endpoint = address
                    outcome.prompt_tokens = last.prompt_tokens
                    outcome.completion_tokens = last.completion_tokens
                    outcome.max_tokens = clamped_max_tokens(request.max_tokens, context_length, last.prompt_tokens)
                    text = "".join(output.text for output in group)
                    if text and not request.stream:
                        parts.append(text)
                    elif text:
                        await self._send(
                            reply,
                            GenerationChunk(
                                kind="delta",
                                text=text,
                                prompt_tokens=last.prompt_tokens,
                                completion_tokens=last.completion_tokens,
                                max_tokens=outcome.max_tokens,
                            ),
                        )
                    if last.finish_reason:
                        outcome.finish_reason = last.finish_reason
                        outcome.stop_sequence = last.stop_word

        prefixes = prefix_keys(request.messages, request.raw_prompt)
        await self._on_an_endpoint(request.model, stream_from, outcome, prefixes)
        outcome.text = "".join(parts)

    async def embed(self, request: EmbeddingJob, reply: str, outcome: Outcome) -> None:
        """Embed every input in one engine call; the vectors go back as float32 bytes in slices."""

        async def embed_on(endpoint: Endpoint, triton_model: str) -> Embeddings:
            outcome.endpoint = endpoint.grpc_address
            return await triton_media.embed(self.engine, endpoint.grpc_address, triton_model, request.inputs)

        result = await self._on_an_endpoint(request.model, embed_on, outcome)
        outcome.prompt_tokens = result.tokens
        await self._send_binary(reply, result.vectors.tobytes())

    async def paint(self, request: ImageJob, reply: str, outcome: Outcome) -> None:
        """Generate one image; the PNG goes back in slices. Charged per image, only on success."""

        async def paint_on(endpoint: Endpoint, triton_model: str) -> bytes:
            outcome.endpoint = endpoint.grpc_address
            return await triton_media.paint(self.engine, endpoint.grpc_address, triton_model, request)

        png = await self._on_an_endpoint(request.model, paint_on, outcome)
        await self._send_binary(reply, png)
        outcome.images = 1

    async def _send_binary(self, reply: str, data: bytes) -> None:
        # Slices keep every message well under NATS's default 1 MB payload limit.
        for piece in triton_media.slices(data, BINARY_SLICE_BYTES):
            await self._send(reply, GenerationChunk(kind="delta", data=base64.b64encode(piece).decode()))

    async def count_tokens(self, request: CountTokensRequest) -> CountTokensReply:
        async def count_on(endpoint: Endpoint, triton_model: str) -> int:
            return await self.engine.count_tokens(
                endpoint.grpc_address, triton_model, request.messages, request.reasoning_budget
            )

        return CountTokensReply(input_tokens=await self._on_an_endpoint(request.model, count_on))

    async def _on_an_endpoint(
        self,
        model_id: str,
        work: Callable[[Endpoint, str], Awaitable[T]],
        outcome: Outcome | None = None,
        prefixes: tuple[str, ...] = (),
    ) -> T:
        """Run `work` on a healthy endpoint the policy picks. When the endpoint cannot be reached or
        its engine fails before producing anything, mark it unhealthy and try another; a failure
        after output is the server's error (502). The engine refusing the request is the caller's
        error (400), and says nothing against the endpoint. A model with no replica up that can be
        woken from zero is waited for (lexora_router.model_holds) until the job's deadline.
        `outcome`: the job's, when it is one (not a token count); `prefixes`: its prompt's affinity keys."""
        record = self.registry.get(model_id)
        if record is not None and not record.deployed_endpoints and record.wakes_on_request:
            until = outcome.deadline if outcome is not None else time.time() + COUNT_HOLD_S
            ready = functools.partial(self._servable, record.id)
            record, candidates = await self.holds.hold(record.id, ready, self.registry.changed, until)
        else:
            if record is None or not record.deployed_endpoints:
                raise ModelUnavailable(f"No ready instance of {model_id}; retry in 30 seconds")
            candidates = self._candidates(record)
            if not candidates:
                raise ModelUnavailable(f"{model_id} cannot serve right now: its engine is failing; retry in 30 seconds")
        route = Route(record.id, record.deployments, prefixes)
        load = Load(self.in_flight, self.engine_load)
        tried: set[str] = set()
        for _ in range(self.max_endpoint_attempts):
            endpoint = self.policy.choose(route, candidates, load, tried)
            if endpoint is None:
                break
            address = endpoint.grpc_address
            if outcome is not None:
                self._count_as(outcome, (record.id, endpoint.deployment or _first_deployment(record)))
            self.in_flight[address] += 1
            self.serving[record.id] += 1
            try:
                # One span per endpoint tried; Triton's own spans join it when it traces (triton_http,
                # triton_streams send the trace context with the request).
                with tracing.span(f"triton {record.triton_model}", CLIENT, attributes=_engine_attributes(endpoint)):
                    result = await work(endpoint, record.triton_model)
            except EngineUnreachable as exc:
                log.warning("endpoint unreachable, trying another", extra={"fields": {"error": str(exc)}})
                self._mark(self.health.failed(record.id, endpoint.name, str(exc), time.time()))
                tried.add(address)
            except EngineFailed as exc:
                log.warning(
                    "engine failed",
                    extra={"fields": {"endpoint": endpoint.name, "error": str(exc), "produced": exc.produced}},
                )
                self._mark(self.health.failed(record.id, endpoint.name, str(exc), time.time()))
                if exc.produced:
                    raise EngineFailure(
                        f"The engine serving {model_id} failed while answering; retry the request"
                    ) from exc
                tried.add(address)
            except EngineRejected as exc:
                self._mark(self.health.served(record.id, endpoint.name, time.time()))
                too_long = ContextLengthExceeded.from_engine(str(exc))
                if too_long is not None:
                    raise too_long from exc
                raise InvalidRequest(f"The model rejected the request: {exc}") from exc
            else:
                self._mark(self.health.served(record.id, endpoint.name, time.time()))
                return result
            finally:
                self.in_flight[address] -= 1
                self.serving[record.id] -= 1
                if not self.serving[record.id]:
                    del self.serving[record.id]
        raise ModelUnavailable(f"No instance of {model_id} could serve the request; retry in 30 seconds")

    def _candidates(self, record: ModelRecord) -> list[Endpoint]:
        """The endpoints that can take a request: ready, and not seen failing by anyone."""
        return [e for e in record.ready_endpoints if self.health.healthy(record.id, e.name)]

    def _servable(self, model_id: str) -> tuple[ModelRecord, list[Endpoint]] | None:
        """A held request's model and its candidates, once it has any."""
        record = self.registry.get(model_id)
        if record is None:
            raise ModelUnavailable(f"{model_id} was withdrawn while the request waited for it")
        candidates = self._candidates(record)
        return (record, candidates) if candidates else None

    def _count_as(self, outcome: Outcome, key: tuple[str, str]) -> None:
        if outcome.counted_as != key:
            self._uncount(outcome.counted_as)
            outcome.counted_as = key
            self.pending[key] += 1

    def _uncount(self, key: tuple[str, str] | None) -> None:
        if key is None:
            return
        self.pending[key] -= 1
        if not self.pending[key]:
            del self.pending[key]

    def _mark(self, change: EndpointHealth | None) -> None:
        """Publish a change of an endpoint's health without holding up the request."""
        if change is None:
            return
        task = asyncio.create_task(self.publish_health(change))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    @staticmethod
    def _cost(request: JobHeader, outcome: Outcome) -> int:
        if outcome.error is not None:
            return 0  # failed jobs are not charged
        return request_cost_pico(
            outcome.prompt_tokens,
            outcome.completion_tokens,
            request.pricing.input_micro_per_mtok,
            request.pricing.output_micro_per_mtok,
        ) + image_cost_pico(outcome.images, request.pricing.image_micro)

    async def _record(self, request: JobHeader, outcome: Outcome, cost: int, started: float) -> None:
        event = UsageEvent(
            request_id=request.request_id,
            account_id=request.account_id,
            key_id=request.key_id,
            model=request.model,
            endpoint=request.endpoint,
            status_code=outcome.status_code,
            error_type=outcome.error.type if outcome.error else None,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            cost_pico=cost,
            reserved_micro=request.reserved_micro,
            lease_id=request.lease_id,
            finish_reason=outcome.finish_reason,
            stream=request.stream,
            thinking_used=getattr(request, "reasoning", False) and outcome.completion_tokens > 0,
            received_at=request.received_at,
            latency_ms=int((time.time() - request.received_at) * 1000),
        )
        self.metrics.tokens.labels("router", request.model, "input").inc(outcome.prompt_tokens)
        self.metrics.tokens.labels("router", request.model, "output").inc(outcome.completion_tokens)
        if cost:
            self.metrics.spend.labels(request.model).inc(cost / PICO_PER_USD)
        await publish_usage_event(self.js, event)

    async def _send(self, reply: str, chunk: GenerationChunk) -> None:
        await self.nc.publish(reply, encode(chunk))


def _first_deployment(record: ModelRecord | None) -> str:
    """The ModelDeployment a model's requests count under before an endpoint takes them."""
    return record.deployments[0].key if record is not None and record.deployments else ""


def _engine_attributes(endpoint: Endpoint) -> dict[str, object]:
    host, _, port = endpoint.grpc_address.rpartition(":")
    return {"server.address": host, "server.port": int(port) if port.isdigit() else 0, "lexora.endpoint": endpoint.name}


def _trace_outcome(span: tracing.Span, outcome: Outcome, cost_pico: int) -> None:
    """A job's outcome on its span: the GenAI token counts and cost, the status it ended with."""
    tracing.record_usage(span, outcome.prompt_tokens, outcome.completion_tokens, cost_pico, outcome.finish_reason)
    span.set_attribute("lexora.status_code", outcome.status_code)
    if outcome.images:
        span.set_attribute("lexora.images", outcome.images)
    if outcome.error is not None:
        span.set_attribute("error.type", outcome.error.type)
        tracing.mark_failed(span, outcome.error.message)


async def _one_by_one(outputs: AsyncIterator[T]) -> AsyncIterator[list[T]]:
    async with aclosing(outputs):
        async for output in outputs:
            yield [output]
