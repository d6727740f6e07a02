"""OpenTelemetry for every Lexora process: set up from the environment, and the W3C trace context
carried across NATS in message headers (`traceparent`, `tracestate`).

Off unless an OTLP endpoint is named (OTEL_EXPORTER_OTLP_ENDPOINT, or its traces-only form): then
no SDK is loaded, no span is created and nothing is added to a message; every helper here returns
after one check (`tracing_on`). On, spans go to that endpoint over OTLP/HTTP in batches (the SDK's
own variables apply: OTEL_BSP_SCHEDULE_DELAY, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, ...).

The GenAI attributes follow OpenTelemetry's semantic conventions for generative AI
(gen_ai.operation.name, gen_ai.request.model, gen_ai.usage.input_tokens, ...); the cost, which the
conventions have no name for, is `lexora.cost_usd` (and `lexora.cost_pico`, exact).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from lexora_contracts.messages import EmbeddingJob, GenerationRequest, ImageJob, JobHeader
from lexora_contracts.subjects import REQUEST_ID_HEADER

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACEPARENT = "traceparent"
SCOPE = "lexora"
PROVIDER = "lexora"  # gen_ai.provider.name: who serves the model, as the conventions' providers name themselves
PICO_PER_USD = 10**12

__all__ = [
    "Span",
    "SpanKind",
    "consumer_spans",
    "current_span",
    "end_consumer_spans",
    "headers_with_context",
    "mark_failed",
    "operation_name",
    "record_usage",
    "set_tracer_provider_from_env",
    "span",
    "tracing_on",
    "use_tracer",
]


def set_tracer_provider_from_env(service: str, environ: Mapping[str, str] = os.environ) -> Any | None:
    """Install the SDK's tracer provider, exporting OTLP/HTTP, when the environment names an OTLP
    endpoint; returns it (to shut down, which sends what is left), or None when tracing stays off."""
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    # Imported here: a process that does not trace never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.namespace": "lexora"}
    if not environ.get("OTEL_SERVICE_NAME"):  # else the SDK's resource detector takes it from there
        attributes[SERVICE_NAME] = f"lexora-{service}"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # for any library that traces through the API's global too
    use_tracer(provider.get_tracer(SCOPE))
    return provider


# The process's tracer, once tracing is set up; None while it is off. Process-wide as the API's own
# tracer provider is, and kept here because asking the API whether one was installed costs a look
# into os.environ on every call (a few microseconds: more than the rest of the off path together).
_tracer: Tracer | None = None


def use_tracer(tracer: Tracer | None) -> None:
    """Record spans with `tracer` from now on (None: stop). set_tracer_provider_from_env calls it;
    tests give a tracer of their own."""
    global _tracer
    _tracer = tracer


def tracing_on() -> bool:
    """Whether this process records spans."""
    return _tracer is not None


def current_span() -> Span | None:
    """The recording span of the code running now; None when there is none (always, while off)."""
    if _tracer is None:
        return None
    running = trace.get_current_span()
    return running if running.is_recording() else None


def headers_with_context(headers: dict[str, str] | None = None) -> dict[str, str] | None:
    """`headers` (a new dict if None) with the current trace context added, for a NATS message or
    an HTTP/gRPC request to Triton; `headers` unchanged when no span is current."""
    if _tracer is None or not trace.get_current_span().get_span_context().is_valid:
        return headers
    carrier = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def context_from(headers: Mapping[str, str] | None) -> Context | None:
    """The trace context a message or request carried; None (a new trace) when it carried none."""
    if not headers or TRACEPARENT not in headers:
        return None
    return propagate.extract(headers)


class _Untraced(contextlib.AbstractContextManager[Span]):
    """What `span` gives while tracing is off: the non-recording span, and nothing else."""

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *_: object) -> None:
        return None


_UNTRACED = _Untraced()


def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    headers: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span around a `with` block, current inside it, continuing the trace `headers` carry (if
    any), else the current one. An exception leaving the block is recorded on it and marks it failed.
    Off: a non-recording span (one shared object, nothing created)."""
    tracer = _tracer
    if tracer is None:
        return _UNTRACED
    return tracer.start_as_current_span(name, context=context_from(headers), kind=kind, attributes=attributes)


def consumer_spans(name: str, messages: list[Any], attributes: Mapping[str, Any] | None = None) -> list[Span] | None:
    """One CONSUMER span per message of a batch, each continuing the trace its message carried
    (a batch's events belong to as many requests); None when off. End them with end_consumer_spans."""
    tracer = _tracer
    if tracer is None:
        return None
    spans = []
    for msg in messages:
        headers = msg.headers or {}
        each = {**(attributes or {}), "lexora.request_id": headers.get(REQUEST_ID_HEADER, "")}
        spans.append(tracer.start_span(name, context=context_from(headers), kind=SpanKind.CONSUMER, attributes=each))
    return spans


def end_consumer_spans(spans: list[Span] | None, outcomes: list[BaseException | None]) -> None:
    """End the spans of a batch, each marked failed when its message could not be handled."""
    for consumer, outcome in zip(spans or (), outcomes, strict=False):
        if outcome is not None:
            mark_failed(consumer, str(outcome))
        consumer.end()


def mark_failed(target: Span, description: str) -> None:
    target.set_status(Status(StatusCode.ERROR, description[:200]))


def operation_name(job: JobHeader) -> str:
    """gen_ai.operation.name of a router job."""
    if isinstance(job, GenerationRequest):
        return "text_completion" if job.raw_prompt is not None else "chat"
    if isinstance(job, EmbeddingJob):
        return "embeddings"
    if isinstance(job, ImageJob):
        return "generate_content"
    return "chat"


def request_attributes(job: JobHeader, requested_model: str | None = None) -> dict[str, Any]:
    """The GenAI attributes a job has before it runs: the operation, the model asked for and served."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(job),
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.system": PROVIDER,  # the older name of gen_ai.provider.name, which backends still read
        "gen_ai.request.model": requested_model or job.model,
        "gen_ai.response.model": job.model,
        "lexora.request_id": job.request_id,
    }
    if isinstance(job, GenerationRequest):
        attributes["gen_ai.request.max_tokens"] = job.max_tokens
        attributes["gen_ai.request.temperature"] = job.temperature
    return attributes


def record_usage(
    target: Span | None,
    input_tokens: int,
    output_tokens: int,
    cost_pico: int,
    finish_reason: str | None = None,
) -> None:
    """A job's token counts and cost on `target`, added to what it holds already (a request may run
    several jobs: a legacy completion's prompts). None (not traced): nothing."""
    if target is None or not target.is_recording():
        return
    held: Mapping[str, Any] = getattr(target, "attributes", None) or {}
    input_tokens += int(held.get("gen_ai.usage.input_tokens", 0))
    output_tokens += int(held.get("gen_ai.usage.output_tokens", 0))
    cost_pico += int(held.get("lexora.cost_pico", 0))
    target.set_attributes(
        {
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "lexora.cost_pico": cost_pico,
            "lexora.cost_usd": cost_pico / PICO_PER_USD,
        }
    )
    if finish_reason:
        reasons = tuple(held.get("gen_ai.response.finish_reasons", ()))
        target.set_attribute("gen_ai.response.finish_reasons", (*reasons, finish_reason))
