"""A replica's own load from its Triton metrics text (lexora_router.engine_load), on what a real
tritonserver serves at /metrics, and on TensorRT-LLM's gauges in the shape its backend documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from lexora_router.engine_load import EngineLoad, parse_engine_load

TRITON_TEXT = (Path(__file__).parent / "data" / "triton_metrics_instant_echo.prom").read_text()
PENDING_LINE = 'nv_inference_pending_request_count{model="instant-echo",version="1"} 0'

# Appended to a Triton text as a TensorRT-LLM model's server adds them: labelled with the
# TensorRT-LLM model inside the ensemble, not the ensemble the router calls.
TRT_LLM_GAUGES = """# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 64
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 3
# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm",version="1"} 64
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm",version="1"} 4680
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="tensorrt_llm",version="1"} 1560
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 6240
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"} 0.75
"""


def test_an_idle_triton_reports_nothing_waiting_and_no_kv_cache() -> None:
    assert PENDING_LINE in TRITON_TEXT
    assert parse_engine_load(TRITON_TEXT, "instant-echo") == EngineLoad(waiting=0.0, kv_cache_use=None)


def test_tritons_pending_count_is_read_for_the_model_called_only() -> None:
    busy = TRITON_TEXT.replace(PENDING_LINE, PENDING_LINE[:-1] + "5")
    other = 'nv_inference_pending_request_count{model="other",version="1"} 7\n'
    text = busy.replace(PENDING_LINE[:-1] + "5", PENDING_LINE[:-1] + "5\n" + other.strip())
    assert parse_engine_load(text, "instant-echo").waiting == 5
    assert parse_engine_load(text, "other").waiting == 7


def test_tensorrt_llm_waiting_requests_and_kv_cache_fraction_are_read() -> None:
    load = parse_engine_load(TRITON_TEXT + TRT_LLM_GAUGES, "ensemble")
    assert load == EngineLoad(waiting=3.0, kv_cache_use=0.75)


def test_kv_cache_use_comes_from_used_and_max_without_a_fraction() -> None:
    without_fraction = "\n".join(line for line in TRT_LLM_GAUGES.splitlines() if "fraction" not in line) + "\n"
    assert parse_engine_load(without_fraction, "ensemble").kv_cache_use == pytest.approx(0.75)


def test_text_that_is_not_prometheus_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_engine_load("<html>not metrics</html>\n", "instant-echo")
