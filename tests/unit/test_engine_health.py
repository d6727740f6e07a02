"""Engine failures are the server's, health is what requests showed, and a failing endpoint is avoided."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from lexora_contracts.errors import EngineFailure, InvalidRequest, ModelUnavailable
from lexora_contracts.registry import Endpoint, EndpointHealth, ModelRecord, Pricing
from lexora_router.endpoint_health import HealthBook
from lexora_router.engine_errors import Fault, classify
from lexora_router.generation import Router
from lexora_router.routing import LeastOutstanding
from lexora_router.triton_engine import EngineFailed, EngineRejected, EngineUnreachable, engine_error

STUB_DEAD = "Stub process 'smollm2-135m-instruct_0_0' is not healthy."


@pytest.mark.parametrize(
    ("message", "status", "fault"),
    [
        (STUB_DEAD, 400, Fault.ENGINE),  # what Triton 2.51 answers for a dead stub, over HTTP
        (STUB_DEAD, None, Fault.ENGINE),  # the same over gRPC streaming: a message, no code
        ("generation failed: llama_decode returned -3", None, Fault.ENGINE),
        ("Failed to process the request(s) for model instance 'x_0_0'", "StatusCode.INVALID_ARGUMENT", Fault.ENGINE),
        ("something went wrong", "StatusCode.INTERNAL", Fault.ENGINE),
        ("something went wrong", "UNAVAILABLE", Fault.ENGINE),
        ("something went wrong", 500, Fault.ENGINE),
        ("prompt is too long: 9000 tokens > 8191 maximum", None, Fault.REQUEST),
        ("max_tokens must be >= 0", "StatusCode.INVALID_ARGUMENT", Fault.REQUEST),
        ("guided_decoding_guide is not a usable json_schema: bad", 400, Fault.REQUEST),
    ],
)
def test_engine_errors_are_classified_by_message_then_status(message: str, status: object, fault: Fault) -> None:
    assert classify(message, status) is fault  # type: ignore[arg-type]


def test_an_engine_failure_remembers_whether_output_had_come_back() -> None:
    failed = engine_error(STUB_DEAD, produced=True)
    assert isinstance(failed, EngineFailed) and failed.produced
    assert isinstance(engine_error("max_tokens must be >= 0", produced=False), EngineRejected)


def test_health_book_publishes_changes_and_first_sightings_only() -> None:
    book = HealthBook("router-1", republish_s=60)
    first = book.served("m", "a", now=100.0)
    assert first is not None and first.healthy and first.observer == "router-1"
    assert book.served("m", "a", now=101.0) is None  # no change
    down = book.failed("m", "a", STUB_DEAD, now=102.0)
    assert down is not None and not down.healthy and down.reason == STUB_DEAD and down.since == 102.0
    assert book.failed("m", "a", "again", now=103.0) is None
    assert not book.healthy("m", "a") and book.reason("m", "a") == "again"
    up = book.served("m", "a", now=104.0)
    assert up is not None and up.healthy and up.since == 104.0


def test_health_book_probes_idle_and_unhealthy_endpoints_and_republishes_failures() -> None:
    book = HealthBook("router-1", republish_s=60)
    assert book.needs_probe("m", "a", now=0.0, interval_s=3)  # never seen
    book.served("m", "a", now=10.0)
    assert not book.needs_probe("m", "a", now=12.0, interval_s=3)  # served lately: that was the probe
    assert book.needs_probe("m", "a", now=13.0, interval_s=3)
    book.failed("m", "a", "down", now=14.0)
    assert book.needs_probe("m", "a", now=14.1, interval_s=3)  # unhealthy: probed every round
    assert book.due_again(now=50.0) == []
    [again] = book.due_again(now=74.0)
    assert not again.healthy and again.checked_at == 74.0 and again.since == 14.0
    book.forget_all_but(set())
    assert book.healthy("m", "a") and book.snapshot() == {}


def _record(*names: str) -> ModelRecord:
    return ModelRecord(
        id="org/model",
        triton_model="model",
        context_length=1024,
        pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
        endpoints=[Endpoint(name=n, grpc_address=f"{n}:8001") for n in names],
    )


def test_observed_health_makes_a_model_degraded_not_pipeline() -> None:
    record = _record("a", "b")
    down = EndpointHealth(model_id=record.id, endpoint="a", healthy=False, reason="dead", since=1, checked_at=1)
    half = record.with_health({down.key: down})
    assert half.status == "live" and [e.name for e in half.ready_endpoints] == ["b"]
    assert half.endpoints[0].unhealthy_reason == "dead"
    both = record.with_health({h.key: h for h in (down, down.model_copy(update={"endpoint": "b"}))})
    assert both.status == "degraded" and both.ready_endpoints == [] and len(both.deployed_endpoints) == 2
    assert _record().status == "pipeline"


class _Registry:
    def __init__(self, record: ModelRecord):
        self.record = record

    def get(self, model_id: str) -> ModelRecord | None:
        return self.record if model_id == self.record.id else None


def _router(record: ModelRecord, published: list[EndpointHealth]) -> Router:
    async def publish(health: EndpointHealth) -> None:
        published.append(health)

    return Router(
        nc=None,  # type: ignore[arg-type]
        js=None,  # type: ignore[arg-type]
        registry=_Registry(record),  # type: ignore[arg-type]
        engine=None,  # type: ignore[arg-type]
        policy=LeastOutstanding(),
        metrics=None,  # type: ignore[arg-type]
        max_endpoint_attempts=3,
        max_job_s=60,
        health=HealthBook("router-1"),
        publish_health=publish,
    )


def _work(failures: dict[str, Exception]) -> tuple[list[str], Callable[[Endpoint, str], Awaitable[str]]]:
    tried: list[str] = []

    async def work(endpoint: Endpoint, triton_model: str) -> str:
        tried.append(endpoint.name)
        if endpoint.name in failures:
            raise failures[endpoint.name]
        return f"served by {endpoint.name}"

    return tried, work


async def test_an_engine_failing_before_output_is_retried_elsewhere_and_avoided_after() -> None:
    published: list[EndpointHealth] = []
    router = _router(_record("a", "b"), published)
    tried, work = _work({"a": EngineFailed(STUB_DEAD, produced=False)})
    results = [await router._on_an_endpoint("org/model", work) for _ in range(3)]
    await asyncio.sleep(0)  # let the health publications run
    assert results == ["served by b"] * 3
    assert tried.count("a") == 1  # marked unhealthy on its first failure, then avoided
    assert not router.health.healthy("org/model", "a")
    assert sorted((h.endpoint, h.healthy) for h in published) == [("a", False), ("b", True)]


async def test_an_engine_failing_after_output_is_a_502_and_not_retried() -> None:
    router = _router(_record("a", "b"), [])
    tried, work = _work({"a": EngineFailed(STUB_DEAD, produced=True), "b": EngineFailed(STUB_DEAD, produced=True)})
    with pytest.raises(EngineFailure) as info:
        await router._on_an_endpoint("org/model", work)
    assert info.value.status == 502 and len(tried) == 1


async def test_no_healthy_endpoint_left_is_a_503_with_retry_after() -> None:
    router = _router(_record("a"), [])
    tried, work = _work({"a": EngineUnreachable("a:8001: UNAVAILABLE")})
    with pytest.raises(ModelUnavailable):
        await router._on_an_endpoint("org/model", work)
    with pytest.raises(ModelUnavailable, match="engine is failing") as info:
        await router._on_an_endpoint("org/model", work)
    assert info.value.status == 503 and info.value.retry_after == 30 and tried == ["a"]


async def test_a_request_the_engine_refuses_is_the_clients_error_and_the_endpoint_stays_healthy() -> None:
    router = _router(_record("a"), [])
    _, work = _work({"a": EngineRejected("max_tokens must be >= 0")})
    with pytest.raises(InvalidRequest, match="max_tokens"):
        await router._on_an_endpoint("org/model", work)
    assert router.health.healthy("org/model", "a")
