"""The routing benchmark's pure parts (bench.routing_bench): the simulated replica's parameters as its
config declares them, the capacity they imply, the seeded workload, the metrics it reads back and
the table it prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.routing_bench import (
    arrivals,
    capacity_rps,
    markdown,
    prompt_tokens,
    sim_parameters,
    sim_repository,
    slot_seconds,
    system_prompts,
    waiting_requests,
    with_parameters,
)


def test_the_parameters_are_read_from_the_sim_models_config() -> None:
    params = sim_parameters()
    assert params["batch_slots"] == 4
    assert params["block_tokens"] == 64
    assert set(params) >= {"prefill_ms_per_token", "decode_ms_per_step", "prefix_cache_blocks", "bytes_per_token"}


def test_a_run_may_set_some_of_the_sims_parameters(tmp_path: Path) -> None:
    repository = sim_repository(tmp_path, {"prefix_cache_blocks": "80", "batch_slots": "8"})
    params = sim_parameters(repository / "lexora-sim-llm" / "config.pbtxt")
    assert params["prefix_cache_blocks"] == 80 and params["batch_slots"] == 8
    assert {k: v for k, v in params.items() if k not in ("prefix_cache_blocks", "batch_slots")} == {
        k: v for k, v in sim_parameters().items() if k not in ("prefix_cache_blocks", "batch_slots")
    }
    assert (repository / "lexora-sim-llm" / "1" / "model.py").is_file()
    with pytest.raises(ValueError, match="no parameter slots"):
        with_parameters('parameters: { key: "batch_slots" value: { string_value: "4" } }', {"slots": "2"})


def test_capacity_is_slots_over_the_time_a_request_without_cache_hits_holds_one() -> None:
    params = {
        "batch_slots": 4,
        "prefill_ms_per_token": 0.5,
        "decode_ms_per_step": 40.0,
        "decode_growth_per_sequence": 0.05,
    }
    # 1000 tokens of prefill (0.5 s) + 16 steps at a full batch (40 ms × 1.15)
    assert slot_seconds(params, 1000, 16) == pytest.approx(0.5 + 16 * 0.046)
    assert capacity_rps(params, 4, 1000, 16) == pytest.approx(16 / 1.236)


def test_the_workload_is_the_same_for_the_same_seed_and_poisson_at_the_rate() -> None:
    first, again = arrivals(10.0, 200.0, 8, 16, seed=3), arrivals(10.0, 200.0, 8, 16, seed=3)
    assert first == again
    assert 1800 < len(first) < 2200  # 10/s over 200 s
    assert all(0 <= a.prefix < 8 and 8 <= a.max_tokens <= 24 for a in first)
    assert len({a.question for a in first}) == len(first)  # every suffix unique
    assert {a.prefix for a in first} == set(range(8))
    prompts = system_prompts(8, 1000, 4, seed=3)
    assert len(set(prompts)) == 8 and all(len(p) == 4000 for p in prompts)


def test_hits_misses_and_waiting_are_read_by_their_labels() -> None:
    sample = {
        ("lexora_sim_prompt_tokens_total", 'cache="hit",model="lexora-sim-llm",version="1"'): 640.0,
        ("lexora_sim_prompt_tokens_total", 'cache="miss",model="lexora-sim-llm",version="1"'): 360.0,
        ("nv_trt_llm_request_metrics", 'model="lexora-sim-llm",request_type="waiting",version="1"'): 3.0,
        ("nv_trt_llm_request_metrics", 'model="lexora-sim-llm",request_type="active",version="1"'): 4.0,
    }
    assert prompt_tokens(sample) == (640.0, 360.0)
    assert waiting_requests(sample) == 3.0


def test_the_table_gives_each_policy_and_ours_over_round_robin() -> None:
    def run(policy: str, p50: float, p99: float, hit: float) -> dict:
        replicas = [{"share": 0.25}, {"share": 0.3}, {"share": 0.2}, {"share": 0.25}]
        ttft = {"p50": p50, "p99": p99, "mean": p50}
        return {
            "policy": policy,
            "requests": 10,
            "answered": 10,
            "ttft_ms": ttft,
            "prefix_hit_rate": hit,
            "replicas": replicas,
        }

    table = markdown({"runs": [run("round_robin", 500.0, 800.0, 0.3), run("least_outstanding", 100.0, 600.0, 0.6)]})
    lines = table.splitlines()
    assert lines[2] == "| round_robin | 10/10 | 500 | 800 | 500 | 30% | 30% |"
    assert lines[3] == "| least_outstanding | 10/10 | 100 | 600 | 100 | 60% | 30% |"
    assert lines[4] == "| least_outstanding ÷ round_robin | | 0.2 | 0.75 | | | |"
