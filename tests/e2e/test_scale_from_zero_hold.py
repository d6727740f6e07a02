"""A model at zero replicas that wakes on request, on the real stack: a chat request through the
OpenAI SDK is held by the router, which announces the demand on router.v1.model.demanded and counts
it in lexora_pending_requests; when the registry shows a replica (as the operator publishes it once
the pod is ready: here the stack's real Triton), the held request is answered and charged once. A
request beyond the router's hold limit (1 in this stack) is 503 with Retry-After in OpenAI's error
envelope, not charged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import nats
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lexora_contracts import subjects
from lexora_contracts.messages import ModelDemand
from lexora_contracts.registry import DeploymentRef, Endpoint, ModelRecord
from lexora_dev.catalog import LOCAL_CHAT_MODEL, local_catalog
from lexora_router.engine_load import EngineLoad
from lexora_router.load_scraper import LoadScraper
from lexora_runtime.model_registry import publish_model
from support.postgres import fresh_database
from support.stack import RunningStack, running_stack

POOL = DeploymentRef(namespace="models", name="sleepy-chat", scales_from_zero=True)
HOLD_LIMIT = 1
RETRY_AFTER_S = "10"


@pytest.fixture(scope="module")
def zero_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, triton_endpoint: Endpoint
) -> Iterator[RunningStack]:
    """The platform with a hold limit of 1 per model and an empty catalog: the test publishes its
    model (at zero replicas, then with the session's tritonserver as its replica)."""
    root = tmp_path_factory.mktemp("scale-from-zero")
    database_url = fresh_database(postgres_url, "scale_from_zero")
    env = {"LEXORA_ROUTER_HOLD_LIMIT": str(HOLD_LIMIT)}
    with running_stack("scale-from-zero", database_url, root, triton_endpoint, [], env) as running:
        yield running


def _at_zero(live: ModelRecord) -> ModelRecord:
    """The chat model as the operator publishes a ModelDeployment scaled to zero: no endpoints."""
    return live.model_copy(update={"id": "test/sleepy-chat", "aliases": [], "endpoints": [], "deployments": [POOL]})


def _wait_listed(stack: RunningStack, model_id: str) -> None:
    deadline = time.monotonic() + 10
    while model_id not in {m["id"] for m in httpx.get(f"{stack.base_url}/models").json()["data"]}:
        assert time.monotonic() < deadline, f"{model_id} never appeared in /v1/models"
        time.sleep(0.1)


def _pending(stack: RunningStack, model_id: str) -> float | None:
    port = stack.processes["router"].env["LEXORA_METRICS_PORT"]
    labels = {"model": model_id, "model_deployment": POOL.name, "model_namespace": POOL.namespace}
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics").text):
        for sample in family.samples:
            if sample.name == "lexora_pending_requests" and sample.labels == labels:
                return sample.value
    return None


def test_a_held_request_wakes_the_model_and_is_answered_once_a_replica_is_ready(
    zero_stack: RunningStack, triton_endpoint: Endpoint
) -> None:
    [live] = [record for record in local_catalog(triton_endpoint) if record.id == LOCAL_CHAT_MODEL]
    sleepy = _at_zero(live)
    account = zero_stack.create_account()
    client = openai.OpenAI(base_url=zero_stack.base_url, api_key=account.api_key, max_retries=0, timeout=180)

    def chat() -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=sleepy.id, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0
        )

    async def scenario() -> tuple[openai.types.chat.ChatCompletion, openai.InternalServerError, ModelDemand]:
        nc = await nats.connect(zero_stack.nats_url)
        try:
            await publish_model(nc.jetstream(), sleepy)
            await asyncio.to_thread(_wait_listed, zero_stack, sleepy.id)
            demands = await nc.subscribe(subjects.ROUTER_MODEL_DEMANDED)
            with ThreadPoolExecutor(2) as pool:
                loop = asyncio.get_running_loop()
                held = loop.run_in_executor(pool, chat)
                demand = ModelDemand.model_validate_json((await demands.next_msg(timeout=15)).data)
                while demand.model_id != sleepy.id or demand.waiting == 0:
                    demand = ModelDemand.model_validate_json((await demands.next_msg(timeout=15)).data)
                assert not held.done()
                assert await asyncio.to_thread(_pending, zero_stack, sleepy.id) == 1

                # the queue holds one: the next request is refused at once
                with pytest.raises(openai.InternalServerError) as refused:
                    await loop.run_in_executor(pool, chat)
                assert not held.done()

                # the replica is ready: the operator publishes its endpoint
                await publish_model(nc.jetstream(), sleepy.model_copy(update={"endpoints": live.endpoints}))
                reply = await held  # within the job's deadline, or the gateway's 504 fails the test
                return reply, refused.value, demand
        finally:
            await nc.drain()

    reply, refused, demand = asyncio.run(scenario())
    assert demand.waiting == 1 and demand.observer.startswith("router@")

    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0

    assert refused.status_code == 503
    assert refused.response.headers["retry-after"] == RETRY_AFTER_S
    error = refused.response.json()["error"]
    assert error["type"] == "model_unavailable" and error["code"] == "model_unavailable"
    assert sleepy.id in error["message"]

    rows = zero_stack.wait_for_usage_rows(account.account_id, 2)
    assert sorted((r["status_code"], r["cost_pico"] > 0) for r in rows) == [(200, True), (503, False)]
    assert len(zero_stack.ledger_charges(account.account_id)) == 1
    assert zero_stack.settled_balance(account.account_id).held_micro == 0
    zero_stack.assert_ledger_consistent(account.account_id)
    assert _pending(zero_stack, sleepy.id) == 0


def test_the_router_reads_a_real_tritons_own_load(triton_endpoint: Endpoint) -> None:
    """The load scraper on the session's tritonserver (the local stack publishes its metrics address)."""
    assert triton_endpoint.metrics_address
    live = local_catalog(triton_endpoint)[0]
    scraper = LoadScraper(lambda: [live])

    async def scrape() -> dict[str, EngineLoad]:
        async with aiohttp.ClientSession() as session:
            await scraper.scrape_once(session)
        return scraper.loads

    loads = asyncio.run(scrape())
    assert list(loads) == [triton_endpoint.metrics_address]
    assert loads[triton_endpoint.metrics_address].waiting >= 0  # Triton's pending count for the model
    assert loads[triton_endpoint.metrics_address].kv_cache_use is None  # reported by TensorRT-LLM only
