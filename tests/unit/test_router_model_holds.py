"""A model at zero replicas that wakes on request: the router holds its requests in a bounded queue,
announces the demand on router.v1.model.demanded, and serves them when the registry shows a ready
replica; beyond the bound, or at the deadline, 503 with Retry-After, never charged. Real NATS, a
real registry view; the jobs' own work stands where the engine would answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client as NATS

from lexora_contracts import subjects
from lexora_contracts.messages import GenerationChunk, JobHeader, ModelDemand
from lexora_contracts.registry import DeploymentRef, Endpoint, EndpointHealth, ModelRecord, Pricing
from lexora_router.app import announce_demand
from lexora_router.demand import DemandSchedule
from lexora_router.endpoint_health import HealthBook
from lexora_router.generation import Outcome, Router
from lexora_router.model_holds import ModelHolds
from lexora_router.routing import LeastOutstanding
from lexora_runtime.bus import ensure_usage_stream
from lexora_runtime.metrics import ServiceMetrics, create_metrics, export_pending_requests
from lexora_runtime.model_registry import ModelRegistryView, publish_model

POOL = DeploymentRef(namespace="models", name="pool-a", scales_from_zero=True)
SECOND = DeploymentRef(namespace="models", name="pool-b")
AT_ZERO = ModelRecord(
    id="org/sleepy",
    triton_model="sleepy",
    context_length=1024,
    pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
    deployments=[POOL, SECOND],
)
# The replica that comes up belongs to the second deployment: a running request counts under it.
REPLICA = Endpoint(name="models/pool-b-0", grpc_address="10.1.0.1:8001", deployment=SECOND.key)
LIMIT = 2
LABELS = {"model": AT_ZERO.id, "model_deployment": POOL.name, "model_namespace": POOL.namespace}
SECOND_LABELS = {**LABELS, "model_deployment": SECOND.name}


async def _no_health(_: EndpointHealth) -> None:
    return None


@dataclass
class Harness:
    nc: NATS
    router: Router
    metrics: ServiceMetrics
    demands: list[ModelDemand]
    served_on: list[str]
    pending_while_served: list[tuple[float | None, float | None]]

    def job(self, request_id: str, timeout_s: float = 30) -> JobHeader:
        now = time.time()
        return JobHeader(
            request_id=request_id,
            account_id="acct",
            key_id="key",
            model=AT_ZERO.id,
            deadline=now + timeout_s,
            pricing=AT_ZERO.pricing,
            reserved_micro=1,
            received_at=now,
            endpoint="/v1/chat/completions",
        )

    async def run(self, request: JobHeader) -> GenerationChunk:
        """Run a job on the router; its final chunk, as the gateway would read it."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)

        async def work(outcome: Outcome) -> None:
            async def serve(endpoint: Endpoint, _: str) -> None:
                self.served_on.append(endpoint.name)
                sample = self.metrics.registry.get_sample_value
                self.pending_while_served.append(
                    (sample("lexora_pending_requests", LABELS), sample("lexora_pending_requests", SECOND_LABELS))
                )
                outcome.prompt_tokens, outcome.completion_tokens = 3, 2

            await self.router._on_an_endpoint(request.model, serve, outcome)

        await self.router.run(request, inbox, work)
        msg = await sub.next_msg(timeout=5)
        await sub.unsubscribe()
        return GenerationChunk.model_validate_json(msg.data)


@pytest.fixture
async def harness(nats_url: str) -> AsyncIterator[Harness]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_usage_stream(js)
    await publish_model(js, AT_ZERO)
    view = ModelRegistryView()
    await view.start(js)
    metrics = create_metrics("router")
    router = Router(
        nc=nc,
        js=js,
        registry=view,
        engine=None,  # type: ignore[arg-type]  # the jobs' own work answers instead of an engine
        policy=LeastOutstanding(),
        metrics=metrics,
        max_endpoint_attempts=1,
        max_job_s=30,
        health=HealthBook("router-1"),
        publish_health=_no_health,
        holds=ModelHolds(limit=LIMIT, retry_after_s=10),
    )
    export_pending_requests(metrics, view.all, router.pending)
    demands: list[ModelDemand] = []

    async def heard(msg: nats.aio.msg.Msg) -> None:
        demands.append(ModelDemand.model_validate_json(msg.data))

    await nc.subscribe(subjects.ROUTER_MODEL_DEMANDED, cb=heard)
    announcing = asyncio.create_task(announce_demand(nc, router, DemandSchedule("router-1")))
    try:
        yield Harness(nc, router, metrics, demands, [], [])
    finally:
        announcing.cancel()
        await view.stop()
        await nc.drain()


async def _until(condition, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_held_requests_are_announced_bounded_and_served_when_a_replica_is_ready(harness: Harness) -> None:
    router, metrics = harness.router, harness.metrics
    held = [asyncio.create_task(harness.run(harness.job(f"held-{i}"))) for i in range(LIMIT)]
    await _until(lambda: router.holds.waiting[AT_ZERO.id] == LIMIT)
    # counted as pending under the model's first deployment while held: what wakes an autoscaler
    assert metrics.registry.get_sample_value("lexora_pending_requests", LABELS) == LIMIT
    await _until(lambda: any(d.model_id == AT_ZERO.id and d.waiting > 0 for d in harness.demands))
    assert harness.demands[0].observer == "router-1"

    refused = await harness.run(harness.job("one-too-many"))
    assert refused.kind == "error" and refused.error is not None
    assert (refused.error.status, refused.error.type, refused.error.retry_after) == (503, "model_unavailable", 10)
    assert not any(task.done() for task in held)

    await publish_model(harness.nc.jetstream(), AT_ZERO.model_copy(update={"endpoints": [REPLICA]}))
    finals = await asyncio.wait_for(asyncio.gather(*held), 5)
    assert [f.kind for f in finals] == ["done", "done"]
    assert all(f.cost_pico > 0 for f in finals)  # served, so charged
    assert harness.served_on == [REPLICA.name, REPLICA.name]
    # the first served counts under its replica's deployment, the other still under the first one
    assert harness.pending_while_served[0] == (1, 1)
    assert router.pending == {} and router.holds.waiting == {}
    assert metrics.registry.get_sample_value("lexora_pending_requests", LABELS) == 0


async def test_a_held_request_still_waiting_at_its_deadline_is_503_not_charged(harness: Harness) -> None:
    started = time.monotonic()
    final = await harness.run(harness.job("late", timeout_s=1.5))
    assert final.kind == "error" and final.error is not None
    assert (final.error.status, final.error.retry_after) == (503, 10)
    assert final.cost_pico == 0
    assert time.monotonic() - started < 5
    assert harness.served_on == [] and harness.router.holds.waiting == {}


async def test_a_model_withdrawn_while_requests_wait_ends_their_wait(harness: Harness) -> None:
    from lexora_runtime.model_registry import withdraw_model

    waiting = asyncio.create_task(harness.run(harness.job("orphan")))
    await _until(lambda: harness.router.holds.waiting[AT_ZERO.id] == 1)
    await withdraw_model(harness.nc.jetstream(), AT_ZERO.id)
    final = await asyncio.wait_for(waiting, 5)
    assert final.kind == "error" and final.error is not None and final.error.status == 503
