"""What a Triton replica says of its own load, read from its Prometheus text (GET /metrics).
Pure: text in, numbers out (lexora_router.load_scraper fetches the text).

- `nv_inference_pending_request_count{model=<triton model>}`: requests Triton holds for the model
  before its backend takes them (every Triton; near zero for an in-flight-batching TensorRT-LLM
  model, whose queue is inside TensorRT-LLM).
- `nv_trt_llm_request_metrics{request_type="waiting"}`: TensorRT-LLM's own waiting requests.
- `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}`: the share of KV-cache blocks
  in use, 0..1 (from `used` / `max` where a version reports no `fraction`).

Both TensorRT-LLM gauges are labelled with the TensorRT-LLM model inside the ensemble
(`model="tensorrt_llm"`), not the ensemble the router calls, so they are read whatever their model
label: a replica serves one model. Names as tensorrtllm_backend documents them ("Triton Metrics")
and as the Gateway API Inference Extension reads them for Triton.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

PENDING = "nv_inference_pending_request_count"
TRT_LLM_REQUESTS = "nv_trt_llm_request_metrics"
TRT_LLM_KV_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"


@dataclass(frozen=True)
class EngineLoad:
    """`waiting`: requests the engine has taken but not started (Triton's pending count plus
    TensorRT-LLM's waiting requests). `kv_cache_use`: KV-cache blocks in use, 0..1; None where the
    engine does not report it."""

    waiting: float = 0.0
    kv_cache_use: float | None = None


def parse_engine_load(text: str, triton_model: str) -> EngineLoad:
    """The load of `triton_model`'s replica from its Triton metrics text. Raises ValueError on text
    that is not Prometheus exposition format."""
    pending = trt_waiting = 0.0
    kv: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == PENDING and labels.get("model") == triton_model:
                pending += sample.value
            elif sample.name == TRT_LLM_REQUESTS and labels.get("request_type") == "waiting":
                trt_waiting += sample.value
            elif sample.name == TRT_LLM_KV_BLOCKS and "kv_cache_block_type" in labels:
                kind = labels["kv_cache_block_type"]
                kv[kind] = kv.get(kind, 0.0) + sample.value
    return EngineLoad(waiting=pending + trt_waiting, kv_cache_use=_kv_use(kv))


def _kv_use(blocks: dict[str, float]) -> float | None:
    if "fraction" in blocks:
        return min(max(blocks["fraction"], 0.0), 1.0)
    if blocks.get("max"):
        return min(max(blocks.get("used", 0.0) / blocks["max"], 0.0), 1.0)
    return None
