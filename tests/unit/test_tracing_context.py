"""The trace context across NATS messages (lexora_runtime.tracing): injected into a message's
headers, extracted on the other side, and nothing at all while tracing is off."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from lexora_contracts.messages import ChatTurn, EmbeddingJob, GenerationRequest, ImageJob
from lexora_contracts.registry import Pricing
from lexora_dev.triton_server import trace_arguments
from lexora_runtime import tracing
from lexora_runtime.logs import JsonFormatter

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, recording into memory (the process's tracer, as
    set_tracer_provider_from_env installs one, without the API's once-only global provider)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer(provider.get_tracer(tracing.SCOPE))
    try:
        yield exporter
    finally:
        tracing.use_tracer(None)


def remote_parent() -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))


def test_headers_carry_the_current_span_as_traceparent(recorded_spans: InMemorySpanExporter) -> None:
    with trace.use_span(remote_parent()):
        headers = tracing.headers_with_context({"Lexora-Request-Id": "req-1"})
    assert headers == {"Lexora-Request-Id": "req-1", "traceparent": TRACEPARENT}


def test_while_off_no_context_is_sent_even_under_a_span() -> None:
    with trace.use_span(remote_parent()):
        assert tracing.headers_with_context({"Lexora-Request-Id": "req-1"}) == {"Lexora-Request-Id": "req-1"}
        assert tracing.current_span() is None


def test_extracting_the_headers_gives_back_the_sender_span() -> None:
    context = tracing.context_from({"traceparent": TRACEPARENT, "Lexora-Request-Id": "req-1"})
    assert context is not None
    parent = trace.get_current_span(context).get_span_context()
    assert (parent.trace_id, parent.span_id, parent.is_remote, parent.trace_flags.sampled) == (
        TRACE_ID,
        SPAN_ID,
        True,
        True,
    )


def test_without_a_current_span_headers_are_left_alone(recorded_spans: InMemorySpanExporter) -> None:
    assert tracing.headers_with_context() is None
    assert tracing.headers_with_context({"Lexora-Request-Id": "req-1"}) == {"Lexora-Request-Id": "req-1"}
    assert tracing.context_from({"Lexora-Request-Id": "req-1"}) is None
    assert tracing.context_from(None) is None


def test_tracing_is_off_without_an_otlp_endpoint() -> None:
    assert tracing.set_tracer_provider_from_env("gateway", {}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    assert tracing.set_tracer_provider_from_env("gateway", endpoint) is None
    assert not tracing.tracing_on()
    with tracing.span("POST /v1/chat/completions", SpanKind.SERVER, {"traceparent": TRACEPARENT}) as off:
        assert not off.is_recording()
        assert tracing.headers_with_context() is None  # nothing current, so nothing to send
    assert tracing.consumer_spans("process usage.v1.request.completed", [SimpleNamespace(headers={})]) is None


def test_a_message_continues_its_sender_trace(recorded_spans: InMemorySpanExporter) -> None:
    with tracing.span("POST /v1/chat/completions", SpanKind.SERVER) as gateway:
        headers = tracing.headers_with_context({"Lexora-Request-Id": "req-1"})
    with tracing.span("chat m", SpanKind.SERVER, headers) as router:
        pass
    assert router.get_span_context().trace_id == gateway.get_span_context().trace_id
    [router_span] = [s for s in recorded_spans.get_finished_spans() if s.name == "chat m"]
    assert router_span.parent is not None and router_span.parent.span_id == gateway.get_span_context().span_id
    assert router_span.kind is SpanKind.SERVER


def test_a_span_without_headers_is_a_child_of_the_current_one(recorded_spans: InMemorySpanExporter) -> None:
    with tracing.span("outer") as outer, tracing.span("inner", SpanKind.CLIENT) as inner:
        pass
    assert inner.parent.span_id == outer.get_span_context().span_id  # type: ignore[attr-defined]


def test_a_failing_block_marks_its_span_failed(recorded_spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.span("billing.v1.credits.reserve", SpanKind.SERVER):
        raise RuntimeError("ledger down")
    [failed] = recorded_spans.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR


def test_each_event_of_a_batch_continues_its_own_trace(recorded_spans: InMemorySpanExporter) -> None:
    other = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"
    messages = [
        SimpleNamespace(headers={"traceparent": TRACEPARENT, "Lexora-Request-Id": "req-1"}),
        SimpleNamespace(headers={"traceparent": other}),
    ]
    spans = tracing.consumer_spans("process usage.v1.request.completed", messages, {"messaging.system": "nats"})
    tracing.end_consumer_spans(spans, [None, RuntimeError("database down")])
    first, second = recorded_spans.get_finished_spans()
    assert (first.context.trace_id, first.parent.span_id) == (TRACE_ID, SPAN_ID)  # type: ignore[union-attr]
    assert second.context.trace_id == 0x1AF7651916CD43DD8448EB211C80319C
    assert (first.kind, first.status.status_code) == (SpanKind.CONSUMER, StatusCode.UNSET)
    assert second.status.status_code is StatusCode.ERROR
    assert first.attributes is not None and first.attributes["lexora.request_id"] == "req-1"


def test_usage_adds_up_over_the_jobs_of_a_request(recorded_spans: InMemorySpanExporter) -> None:
    with tracing.span("POST /v1/completions") as request:
        tracing.record_usage(request, 10, 5, 600_000, "length")
        tracing.record_usage(request, 12, 3, 600_000, "stop")
    [done] = recorded_spans.get_finished_spans()
    assert done.attributes is not None
    assert dict(done.attributes) == {
        "gen_ai.usage.input_tokens": 22,
        "gen_ai.usage.output_tokens": 8,
        "lexora.cost_pico": 1_200_000,
        "lexora.cost_usd": 1.2e-6,
        "gen_ai.response.finish_reasons": ("length", "stop"),
    }


def _header(**changes: object) -> dict[str, object]:
    header: dict[str, object] = {
        "request_id": "req-1",
        "account_id": "a",
        "key_id": "k",
        "model": "m",
        "deadline": 0.0,
        "pricing": Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0),
        "reserved_micro": 0,
        "received_at": 0.0,
        "endpoint": "/v1/chat/completions",
    }
    return {**header, **changes}


def test_genai_operation_names_follow_the_job() -> None:
    chat = GenerationRequest(
        **_header(),
        messages=[ChatTurn(role="user", content="hi")],
        stream=True,
        max_tokens=8,
        temperature=0.7,
        top_p=1.0,
    )
    image = ImageJob(
        **_header(endpoint="/v1/images/generations"),
        prompt="a cat",
        width=256,
        height=256,
        num_inference_steps=1,
        guidance_scale=0.0,
    )
    assert tracing.operation_name(chat) == "chat"
    assert tracing.operation_name(chat.model_copy(update={"raw_prompt": "hi"})) == "text_completion"
    assert tracing.operation_name(EmbeddingJob(**_header(endpoint="/v1/embeddings"), inputs=["hi"])) == "embeddings"
    assert tracing.operation_name(image) == "generate_content"


def test_request_attributes_name_the_model_asked_for_and_the_one_served() -> None:
    chat = GenerationRequest(
        **_header(),
        messages=[ChatTurn(role="user", content="hi")],
        stream=True,
        max_tokens=8,
        temperature=0.5,
        top_p=1.0,
    )
    assert tracing.request_attributes(chat, "alias-of-m") == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "lexora",
        "gen_ai.system": "lexora",
        "gen_ai.request.model": "alias-of-m",
        "gen_ai.response.model": "m",
        "gen_ai.request.max_tokens": 8,
        "gen_ai.request.temperature": 0.5,
        "lexora.request_id": "req-1",
    }


def test_triton_traces_only_when_an_endpoint_is_named() -> None:
    assert trace_arguments({}) == []
    arguments = trace_arguments(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    )
    settings = arguments[1::2]
    assert arguments[0::2] == ["--trace-config"] * len(settings)
    assert {"mode=opentelemetry", "rate=0", "opentelemetry,url=http://127.0.0.1:4318/v1/traces"} <= set(settings)
    assert "opentelemetry,bsp_schedule_delay=100" in settings
    traces_only = trace_arguments({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert "opentelemetry,url=http://collector:4318/v1/traces" in traces_only


def test_log_lines_of_a_traced_request_name_its_trace(recorded_spans: InMemorySpanExporter) -> None:
    formatter = JsonFormatter("router")
    record = logging.LogRecord("lexora.router", logging.INFO, __file__, 1, "generation finished", None, None)
    with tracing.span("chat m") as job:
        traced = json.loads(formatter.format(record))
    assert traced["trace_id"] == format(job.get_span_context().trace_id, "032x")
    assert "trace_id" not in json.loads(formatter.format(record))
