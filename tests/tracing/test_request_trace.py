"""One chat request, one trace: the gateway, the router and its Triton call, Triton's own spans,
and billing's and usage's handling of the usage event, exported over OTLP/HTTP to a real receiver.

The whole stack runs traced (OTEL_EXPORTER_OTLP_ENDPOINT names the receiver), on a tritonserver of
its own started with OpenTelemetry tracing, serving the local chat model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from lexora_dev import stack
from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_TRITON_MODEL, local_catalog
from support.otlp_receiver import OtlpReceiver, ReceivedSpan
from support.postgres import fresh_database
from support.stack import RunningStack, running_stack

USAGE_SUBJECT = "usage.v1.request.completed"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced(state_root: Path, postgres_url: str, receiver: OtlpReceiver) -> Iterator[RunningStack]:
    """The platform with tracing on, on a traced tritonserver serving the chat model only."""
    tracing_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    repo = state_root / "traced-model-repo"
    repo.mkdir()
    (repo / LOCAL_TRITON_MODEL).symlink_to(stack.MODEL_REPO / LOCAL_TRITON_MODEL)
    triton = stack.SupervisedTriton(state_root / "traced-triton", repo, environ={**os.environ, **tracing_env})
    try:
        catalog = [record for record in local_catalog(triton.endpoint) if record.id == LOCAL_CHAT_MODEL]
        database_url = fresh_database(postgres_url, "traced")
        with running_stack(
            "traced", database_url, state_root / "traced", triton.endpoint, catalog, extra_env=tracing_env
        ) as running:
            yield running
    finally:
        triton.stop()


def _one(spans: list[ReceivedSpan], service: str, name: str, parent: ReceivedSpan | None = None) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    if parent is not None:
        found = [s for s in found if s.parent_span_id == parent.span_id]
    assert len(found) == 1, f"{service} {name!r} under {parent and parent.name}: {found} in {spans}"
    return found[0]


def test_a_streamed_chat_request_is_one_trace_across_the_services(traced: RunningStack, receiver: OtlpReceiver) -> None:
    account = traced.create_account()
    client = OpenAI(base_url=traced.base_url, api_key=account.api_key)
    stream = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    [row] = traced.wait_for_usage_rows(account.account_id, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)

    def gateway_span(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
        return next(
            (
                s
                for s in spans
                if s.service == "lexora-gateway" and s.attributes.get("lexora.request_id") == row["request_id"]
            ),
            None,
        )

    def complete(spans: list[ReceivedSpan]) -> bool:
        edge = gateway_span(spans)
        if edge is None:
            return False
        services = {s.service for s in spans if s.trace_id == edge.trace_id}
        return {"lexora-router", "lexora-triton", "lexora-billing", "lexora-usage"} <= services

    edge = gateway_span(receiver.wait_for(complete))
    assert edge is not None, "the gateway exported no span for the request"
    spans = receiver.trace(edge.trace_id)

    # The gateway's SERVER span is the root, with the GenAI attributes and the usage record's counts.
    assert (edge.name, edge.kind, edge.parent_span_id) == ("POST /v1/chat/completions", "SERVER", "")
    expected_usage = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "lexora",
        "gen_ai.request.model": LOCAL_CHAT_MODEL,
        "gen_ai.response.model": LOCAL_CHAT_MODEL,
        "gen_ai.usage.input_tokens": row["prompt_tokens"],
        "gen_ai.usage.output_tokens": row["completion_tokens"],
        "lexora.cost_pico": row["cost_pico"],
    }
    assert expected_usage.items() <= edge.attributes.items()
    assert edge.attributes["http.response.status_code"] == 200
    assert edge.attributes["http.route"] == "/v1/chat/completions"
    assert [s for s in spans if s.service == "lexora-gateway" and s.kind == "SERVER"] == [edge]
    assert row["cost_pico"] > 0 and edge.attributes["lexora.cost_usd"] == pytest.approx(row["cost_pico"] / 1e12)

    # The router's job span continues it (over NATS), with the same counts and cost.
    job = _one(spans, "lexora-router", f"chat {LOCAL_CHAT_MODEL}", parent=edge)
    assert job.kind == "SERVER" and not job.failed
    assert expected_usage.items() <= job.attributes.items()
    assert job.attributes["lexora.status_code"] == 200

    # Its Triton call, and Triton's own spans under it (the traceparent went with the request).
    engine_call = _one(spans, "lexora-router", f"triton {LOCAL_TRITON_MODEL}", parent=job)
    assert engine_call.kind == "CLIENT"
    assert [s for s in spans if s.service == "lexora-triton" and s.parent_span_id == engine_call.span_id]
    triton_span_names = {s.name for s in spans if s.service == "lexora-triton"}
    assert {LOCAL_TRITON_MODEL, "compute"} <= triton_span_names

    # The usage event, published once, and billing's and usage's consumers continuing from it.
    published = _one(spans, "lexora-router", f"publish {USAGE_SUBJECT}", parent=job)
    assert published.kind == "PRODUCER"
    settled = _one(spans, "lexora-billing", f"process {USAGE_SUBJECT}", parent=published)
    recorded = _one(spans, "lexora-usage", f"process {USAGE_SUBJECT}", parent=published)
    for consumer in (settled, recorded):
        assert consumer.kind == "CONSUMER" and not consumer.failed
        assert consumer.attributes["messaging.system"] == "nats"
        assert consumer.attributes["lexora.request_id"] == row["request_id"]
