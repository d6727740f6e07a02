"""`lexora_pending_requests`, what the autoscaler of a ModelDeployment reads (docs/operator.md,
"Autoscaling"): the router counts a request from the moment it takes it to its end, labelled with
the ModelDeployment the registry says publishes the model. Real NATS, a real registry view."""

from __future__ import annotations

import asyncio
import time

import nats

from lexora_contracts.messages import JobHeader
from lexora_contracts.registry import DeploymentRef, Endpoint, EndpointHealth, ModelRecord, Pricing
from lexora_router.endpoint_health import HealthBook
from lexora_router.generation import Outcome, Router
from lexora_router.routing import LeastOutstanding
from lexora_runtime.bus import ensure_usage_stream
from lexora_runtime.metrics import create_metrics, export_pending_requests
from lexora_runtime.model_registry import ModelRegistryView, publish_model

PUBLISHED = ModelRecord(
    id="org/model",
    triton_model="model",
    context_length=1024,
    pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
    endpoints=[Endpoint(name="models/model-a", grpc_address="model-a:8001")],
    deployments=[DeploymentRef(namespace="models", name="model-a")],
)
BY_HAND = PUBLISHED.model_copy(update={"id": "dev/model", "deployments": []})
LABELS = {"model": "org/model", "model_deployment": "model-a", "model_namespace": "models"}


def _job(request_id: str, model: str) -> JobHeader:
    now = time.time()
    return JobHeader(
        request_id=request_id,
        account_id="acct",
        key_id="key",
        model=model,
        deadline=now + 30,
        pricing=PUBLISHED.pricing,
        reserved_micro=1,
        received_at=now,
        endpoint="/v1/chat/completions",
    )


async def _no_health(_: EndpointHealth) -> None:
    return None


async def test_a_request_is_pending_from_start_to_end_under_its_model_deployment(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_usage_stream(js)
    await publish_model(js, PUBLISHED)
    await publish_model(js, BY_HAND)
    view = ModelRegistryView()
    await view.start(js)
    metrics = create_metrics("router")
    router = Router(
        nc=nc,
        js=js,
        registry=view,
        engine=None,  # type: ignore[arg-type]  # the job's own work below never reaches an engine
        policy=LeastOutstanding(),
        metrics=metrics,
        max_endpoint_attempts=1,
        max_job_s=30,
        health=HealthBook("router-1"),
        publish_health=_no_health,
    )
    export_pending_requests(metrics, view.all, router.pending)

    def pending(labels: dict[str, str]) -> float | None:
        return metrics.registry.get_sample_value("lexora_pending_requests", labels)

    try:
        assert pending(LABELS) == 0  # exported while idle: the autoscaler always has a value
        assert pending({"model": "dev/model", "model_deployment": "", "model_namespace": ""}) == 0
        started, release = asyncio.Event(), asyncio.Event()

        async def work(_: Outcome) -> None:
            started.set()
            await release.wait()

        jobs = [asyncio.create_task(router.run(_job(f"r{i}", "org/model"), f"_INBOX.r{i}", work)) for i in range(3)]
        await started.wait()
        await asyncio.sleep(0)
        assert pending(LABELS) == 3
        release.set()
        await asyncio.gather(*jobs)
        assert pending(LABELS) == 0
        assert router.pending == {}
    finally:
        await view.stop()
        await nc.drain()
