"""The routing benchmark's simulated LLM replica (bench/routing/model-repo/lexora-sim-llm) in the real
CPU tritonserver, driven by the router's own engine client: it loads, streams one response per
token, counts prompt tokens, finds a repeated prompt's blocks in its prefix cache, queues beyond its
batch slots, and exports its load under TensorRT-LLM's metric names (what the router reads)."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_contracts.registry import Pricing
from lexora_dev.processes import ManagedProcess, free_port, http_ok, wait_until
from lexora_dev.triton_server import triton_command
from lexora_router.triton_engine import TritonEngine

ROOT = Path(__file__).resolve().parents[2]
MODEL = "lexora-sim-llm"
SIM_REPO = ROOT / "bench" / "routing" / "model-repo"
# Long enough for several 64-token (256-byte) blocks.
SYSTEM = "You are a careful assistant for a shipping company. " * 40


@dataclass
class Replica:
    grpc: str
    http: str
    metrics: str


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    state = tmp_path_factory.mktemp("sim-triton")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    argv, env = triton_command(SIM_REPO, state, http_port, grpc_port, metrics_port)
    process = ManagedProcess("tritonserver", argv, state / "logs" / "triton.log", env=env).start()
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready"), 120, "tritonserver", process)
        yield Replica(f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", f"127.0.0.1:{metrics_port}")
    finally:
        process.stop()


@pytest.fixture
async def engine() -> AsyncIterator[TritonEngine]:
    engine = TritonEngine()
    yield engine
    await engine.close()


def job(max_tokens: int, user: str, stream: bool = True) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"r-{user}",
        account_id="a",
        key_id="k",
        model="m",
        messages=[ChatTurn(role="system", content=SYSTEM), ChatTurn(role="user", content=user)],
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        stream=stream,
        deadline=time.time() + 60,
        pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
        reserved_micro=0,
        received_at=time.time(),
    )


def metric_values(replica: Replica) -> dict[str, float]:
    """Every sample of the sim's families, keyed by `name{labels}` as Triton prints them."""
    with urllib.request.urlopen(f"http://{replica.metrics}/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        match = re.match(r"^((?:nv_trt_llm|lexora_sim)\w*\{[^}]*\})\s+(\S+)$", line)
        if match:
            out[match.group(1)] = float(match.group(2))
    return out


def sample(values: dict[str, float], name: str, label: str) -> float:
    found = [v for k, v in values.items() if k.startswith(name + "{") and label in k and f'model="{MODEL}"' in k]
    assert len(found) == 1, f"{name} with {label}: {found} in {sorted(values)}"
    return found[0]


async def test_streams_one_response_per_token_over_http_and_grpc(engine: TritonEngine, replica: Replica) -> None:
    over_http = [o async for o in engine.generate(replica.grpc, MODEL, job(5, "first"), http_address=replica.http)]
    over_grpc = [o async for o in engine.generate(replica.grpc, MODEL, job(3, "second"))]
    for outputs, n in ((over_http, 5), (over_grpc, 3)):
        tokens = [o for o in outputs if o.text]
        assert len(tokens) == n
        assert outputs[-1].finish_reason == "length"
        assert outputs[-1].completion_tokens == n
        assert outputs[-1].prompt_tokens > len(SYSTEM) // 8


async def test_counts_prompt_tokens_at_once(engine: TritonEngine, replica: Replica) -> None:
    counted = await engine.count_tokens(replica.grpc, MODEL, job(1, "count").messages)
    assert counted >= len(SYSTEM) // 4


async def test_exports_queue_kv_use_and_prefix_hits_under_trtllm_names(engine: TritonEngine, replica: Replica) -> None:
    before = metric_values(replica)
    assert sample(before, "nv_trt_llm_request_metrics", 'request_type="max"') == 4  # batch_slots
    assert sample(before, "nv_trt_llm_kv_cache_block_metrics", 'kv_cache_block_type="max"') == 256
    hits_before = sample(before, "lexora_sim_prompt_tokens_total", 'cache="hit"')

    async def one(i: int) -> int:
        request = job(40, f"load {i}")
        outputs = [o async for o in engine.generate(replica.grpc, MODEL, request, http_address=replica.http)]
        return sum(1 for o in outputs if o.text)

    # Ten requests on four slots: six wait, and the running ones hold KV-cache blocks.
    running = [asyncio.create_task(one(i)) for i in range(10)]
    peak_waiting = peak_fraction = 0.0
    while not all(t.done() for t in running):
        values = metric_values(replica)
        peak_waiting = max(peak_waiting, sample(values, "nv_trt_llm_request_metrics", 'request_type="waiting"'))
        fraction = sample(values, "nv_trt_llm_kv_cache_block_metrics", 'kv_cache_block_type="fraction"')
        assert 0.0 <= fraction <= 1.0
        peak_fraction = max(peak_fraction, fraction)
        await asyncio.sleep(0.1)
    assert [t.result() for t in running] == [40] * 10
    assert peak_waiting >= 1
    assert peak_fraction > 0

    await asyncio.sleep(0.5)  # the gauges are brought up to date every 0.2 s
    after = metric_values(replica)
    assert sample(after, "nv_trt_llm_request_metrics", 'request_type="waiting"') == 0
    assert sample(after, "nv_trt_llm_kv_cache_block_metrics", 'kv_cache_block_type="fraction"') == 0
    # The shared system prompt's blocks were found in the cache by all but the first requests.
    assert sample(after, "lexora_sim_prompt_tokens_total", 'cache="hit"') - hits_before >= 9 * 64
