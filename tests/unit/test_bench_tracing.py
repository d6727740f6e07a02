"""The tracing benchmark's pure parts: the sink's span count of both OTLP encodings, and the
side-by-side summary of the variants (bench.tracing_bench)."""

from __future__ import annotations

import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.tools.otlp_sink import span_count
from bench.tracing_bench import markdown, summarize


def test_the_sink_counts_the_spans_of_protobuf_and_json_exports() -> None:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for name in ("POST /v1/chat/completions", "chat m", "triton m"):
        scope.spans.add(name=name)
    assert span_count(request.SerializeToString(), "application/x-protobuf") == 3
    triton = {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "compute"}, {"name": "InferRequest"}]}]}]}
    assert span_count(json.dumps(triton).encode(), "application/json") == 2


def _run(tracing: bool, rps: float, p50: float, cpu: float) -> dict:
    def mode(latency: str) -> dict:
        figures = {
            "rps": rps,
            latency: {"p50": p50, "p99": p50 * 2},
            "services_cpu_ms_per_request": cpu,
        }
        if latency == "ttft_ms":
            figures["latency_ms"] = {"p50": p50 * 3, "p99": p50 * 6}
        if tracing:
            figures["spans_per_request"] = 6.0
        return figures

    return {"tracing": tracing, "modes": {"nonstream": mode("latency_ms"), "stream": mode("ttft_ms")}}


def test_the_summary_takes_the_median_of_each_variant_and_divides_on_by_off() -> None:
    runs = [_run(False, 100, 10, 4.0), _run(True, 90, 11, 5.0), _run(True, 80, 13, 5.0), _run(False, 110, 10, 4.0)]
    summary = summarize(runs)
    nonstream = summary["nonstream"]
    assert nonstream["off"]["rps"] == 105 and nonstream["on"]["rps"] == 85
    assert nonstream["on_over_off"]["services_cpu_ms_per_request"] == 1.25
    assert summary["stream"]["on"]["p50_ms"] == 12  # time to first token when streaming
    assert "| streaming (time to first token) | spans exported per request | - | 6.0 | - |" in markdown(summary)
