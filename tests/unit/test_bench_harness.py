"""The benchmark harness's pure parts: statistics, derived figures, the report, profile summaries,
the load generator's HTTP response reader and its open loop. No speed is asserted: the open-loop
tests check only lower bounds that their test server's own delays guarantee."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math

from bench import pyspy_summary, report
from bench.tools import loadgen


def test_percentile_interpolates_between_ranks() -> None:
    assert report.percentile([1, 2, 3, 4], 50) == 2.5
    assert report.percentile([5], 99) == 5
    assert report.percentile(list(range(101)), 99) == 99
    assert math.isnan(report.percentile([], 50))


def test_summaries_of_lists_and_of_wrk() -> None:
    summary = report.summarize([1.0, 2.0, 3.0, 4.0])
    assert summary["n"] == 4 and summary["p50"] == 2.5 and summary["max"] == 4.0 and summary["mean"] == 2.5
    assert report.summarize([]) == {"n": 0}
    wrk = {
        "requests": 10,
        "duration_us": 1_000_000,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 2, "timeout": 0},
        "latency_us": {
            "min": 100,
            "max": 9000,
            "mean": 1500.0,
            "stdev": 1.0,
            "percentiles": {"50": 1000, "75": 1200, "90": 2000, "95": 3000, "99": 8000, "99.9": 9000},
        },
    }
    assert report.summarize_wrk(wrk)["p99"] == 8.0
    assert report.summarize_wrk(wrk)["p999"] == 9.0
    assert report.wrk_counts(wrk) == (10, 8, {"status": 2})


def test_saturation_is_the_first_level_near_the_peak() -> None:
    points = [(1, 49.0), (4, 72.0), (16, 55.0)]
    assert report.peak(points) == (4, 72.0)
    assert report.saturation_concurrency(points) == 4
    assert report.saturation_concurrency([(1, 95.0), (4, 100.0)]) == 1
    assert report.saturation_concurrency([]) == 0


def _run(target: str, mode: str, concurrency: int, rps: float, p50: float, p99: float) -> dict:
    metric = "ttft_ms" if mode == "stream" else "latency_ms"
    lat = {"n": 100, "p50": p50, "p75": p50, "p90": p99, "p95": p99, "p99": p99, "p999": p99, "max": p99}
    return {
        "target": target,
        "mode": mode,
        "concurrency": concurrency,
        "workers": 1,
        "rps": rps,
        "ok": 100,
        "requests": 100,
        metric: lat,
        "latency_ms": lat,
        "cpu_ms_per_request": {"gateway": 1.0},
    }


def _results() -> dict:
    runs = []
    for mode in ("nonstream", "stream"):
        runs += [
            _run("direct", mode, 1, 2000, 0.5, 1.0),
            _run("direct", mode, 4, 2500, 1.5, 3.0),
            _run("shim", mode, 1, 900, 1.0, 2.0),
            _run("shim", mode, 4, 1000, 3.0, 6.0),
            _run("litellm", mode, 1, 50, 20.0, 40.0),
            _run("litellm", mode, 4, 70, 55.0, 80.0),
            _run("portkey", mode, 1, 600, 2.0, 3.5),
            _run("portkey", mode, 4, 800, 4.0, 8.0),
            _run("stack", mode, 1, 300, 3.0, 6.0),
            _run("stack", mode, 4, 400, 9.0, 15.0),
        ]
    return {
        "config": {"workers": [1], "quick": True},
        "runs": runs,
        "e2e": {"stack_vs_direct_tokens_per_s": 0.97},
        "meta": {
            "versions": {"litellm": "1.106.2", "portkey": "1.15.2"},
            "litellm_mode": "no database",
            "started_at": "now",
            "machine": {"cores": 2, "cpu_model": "cpu", "mem_gib": 8},
        },
    }


def test_overhead_and_headline_from_runs() -> None:
    results = _results()
    section = report.overhead(results["runs"], 1, "nonstream")
    assert section["litellm_saturation_concurrency"] == 4
    assert section["rps_ratio_vs_litellm"] == round(400 / 70, 3)
    assert section["added_ms"]["4"]["stack_vs_direct"]["p50"] == 7.5
    assert section["added_ms"]["4"]["litellm_vs_shim"]["p99"] == 74.0
    head = report.headline(results)
    assert head["p50_added_ms"] == 7.5 and head["p99_added_ms"] == 12.0
    assert head["ttft_added_ms_p50"] == 7.5
    assert head["p50_added_ms_c1"] == 2.5
    assert head["stack_vs_direct_tokens_per_s"] == 0.97
    # Portkey over the shim at 1 client: 2.0 − 1.0 ms p50, 3.5 − 2.0 ms p99; peaks 400 ÷ 800.
    assert head["portkey_p50_added_ms"] == 1.0 and head["portkey_p99_added_ms"] == 1.5
    assert head["rps_ratio_vs_portkey"] == 0.5 and head["portkey_version"] == "1.15.2"
    assert head["targets_met"] == {
        "p50_added_c1_at_most_1ms": False,  # 2.5 ms
        "p50_added_c1_under_1_5ms": False,
        "p99_added_c1_at_most_4ms": False,  # 5.0 ms
        "open_loop_p50_added_at_most_1_5ms": False,  # no open loop in these results
        "open_loop_p99_added_at_most_4ms": False,
        "rps_at_least_10x_litellm": False,  # 400 ÷ 70 = 5.7
        "rps_at_least_8x_litellm": False,
        "cpu_per_request_at_most_1_5ms": True,  # 1.0 ms (the gateway's alone here)
        "rps_at_least_portkeys": False,
        "p50_added_c1_at_most_portkeys": False,
        "memory_growth_about_0": False,  # no memory section
    }
    growth = {"gateway": {"rss_growth_mib_per_10k": 0.4}, "shim": {"rss_growth_mib_per_10k": 9.0}}
    results["memory"] = {"requests": 100_000, "processes": growth}
    assert report.headline(results)["targets_met"]["memory_growth_about_0"]  # the shim is not the stack's
    results["headline"] = head
    markdown = report.render_markdown(results)
    assert "Lexora req/s ÷ LiteLLM req/s" in markdown and "| Lexora stack → Triton | 4 |" in markdown


def test_closed_loop_floor_from_cpu_per_request_and_cores() -> None:
    results = _results()
    stack_c4 = report.find_run(results["runs"], target="stack", mode="nonstream", concurrency=4)
    stack_c4["cpu_ms_per_request"] = {"gateway": 1.0, "router": 1.5, "triton": 0.5, "machine_busy": 9.0}
    stack_c4["latency_ms"] = {**stack_c4["latency_ms"], "mean": 9.5}
    floor = report.closed_loop_floor(results["runs"], 1, 4, 2)
    # 3 ms of CPU per request (machine-wide busy time is not a process) on 2 cores: 4 clients wait
    # at least 4 * 3 / 2 ms on average; within 1.5 ms of direct's 1.5 ms p50 needs 2 * 3 / 4 ms.
    assert floor["cpu_ms_per_request"] == 3.0 and floor["triton_cpu_ms_per_request"] == 0.5
    assert floor["mean_latency_floor_ms"] == 6.0 and floor["mean_latency_ms"] == 9.5
    assert floor["cpu_budget_for_p50_target_ms"] == 1.5  # 2 × (1.5 + 1.5) ÷ 4
    head = report.headline(results)
    assert head["cpu_ms_per_request_at_saturation"] == 3.0
    assert head["closed_loop_mean_floor_ms"] == 6.0
    assert head["cpu_ms_per_request_budget_for_p50_target"] == 1.5
    results["headline"] = head
    markdown = report.render_markdown(results)
    assert "4 × 3.00 ÷ 2 = **6.00 ms**" in markdown and "2 × (1.50 + 1.5) ÷ 4 = **1.50 ms**" in markdown
    # no CPU figures, or no such run: nothing to say
    assert report.closed_loop_floor(results["runs"], 1, 16, 2) == {}
    assert report.closed_loop_floor([], 1, 4, 2) == {}


def _open_loop_section(runs: list[dict], rate: float, added: dict) -> dict:
    """What Bench.open_loop returns for these runs at this rate."""
    return {
        "rate": rate,
        "share_of_litellm_peak": 0.9,
        "max_in_flight": 64,
        "duration_s": 8,
        "runs": runs,
        "added_ms": added,
    }


def test_open_loop_added_latency_in_the_headline_and_report() -> None:
    results = _results()
    lat = {"n": 100, "p50": 0.8, "p90": 1.0, "p95": 1.1, "p99": 1.3, "max": 2.0}
    runs = [
        {"target": "direct", "ok": 100, "requests": 100, "rps": 63.0, "latency_ms": lat},
        {"target": "shim", "ok": 100, "requests": 100, "rps": 63.0, "latency_ms": {**lat, "p50": 1.5, "p99": 2.0}},
        {"target": "litellm", "ok": 100, "requests": 100, "rps": 63.0, "latency_ms": {**lat, "p50": 40, "p99": 90}},
        {"target": "stack", "ok": 100, "requests": 100, "rps": 63.0, "latency_ms": {**lat, "p50": 3.8, "p99": 7.3}},
    ]
    added = report.open_loop_added(runs)
    assert added["stack_vs_direct"]["p50"] == 3.0 and added["stack_vs_direct"]["p99"] == 6.0
    assert added["litellm_vs_shim"]["p50"] == 38.5
    results["rate"] = _open_loop_section(runs, 63.0, added)
    head = report.headline(results)
    assert head["open_loop_rate_rps"] == 63.0
    assert (head["open_loop_p50_added_ms"], head["open_loop_p99_added_ms"]) == (3.0, 6.0)
    assert head["open_loop_litellm_p99_added_ms"] == 88.0
    results["headline"] = head
    markdown = report.render_markdown(results)
    assert "### Open loop: every target at 63.0 req/s (90% of LiteLLM's peak)" in markdown
    assert "| Lexora stack over Triton direct | 3.00 |" in markdown
    # a run without the section renders and reports nothing for it
    assert report.headline(_results())["open_loop_p50_added_ms"] is None


def test_streaming_open_loop_reports_added_time_to_first_token() -> None:
    results = _results()
    whole = {"n": 50, "p50": 9.0, "p90": 10.0, "p95": 11.0, "p99": 12.0, "max": 14.0}

    def run(target: str, ttft_p50: float, ttft_p99: float) -> dict:
        first = {"n": 50, "p50": ttft_p50, "p90": ttft_p50, "p95": ttft_p99, "p99": ttft_p99, "max": ttft_p99}
        return {
            "target": target,
            "mode": "stream",
            "ok": 50,
            "requests": 50,
            "rps": 45.0,
            "latency_ms": whole,
            "ttft_ms": first,
        }

    runs = [run("direct", 1.0, 2.0), run("shim", 1.5, 2.5), run("litellm", 30.0, 70.0), run("stack", 3.5, 6.0)]
    # added is taken on the time to first token, not on the whole stream (equal for every target here)
    added = report.open_loop_added(runs, report.metric_of("stream"))
    assert added["stack_vs_direct"]["p50"] == 2.5 and added["stack_vs_direct"]["p99"] == 4.0
    assert report.open_loop_added(runs)["stack_vs_direct"]["p50"] == 0.0
    results["rate_stream"] = {"mode": "stream", **_open_loop_section(runs, 45.0, added)}
    head = report.headline(results)
    assert head["open_loop_ttft_rate_rps"] == 45.0
    assert (head["open_loop_ttft_p50_added_ms"], head["open_loop_ttft_p99_added_ms"]) == (2.5, 4.0)
    assert head["open_loop_ttft_litellm_p50_added_ms"] == 28.5
    # the non-streaming open loop's keys are untouched by the streaming one
    assert head["open_loop_p50_added_ms"] is None
    results["headline"] = head
    markdown = report.render_markdown(results)
    assert (
        "### Open loop: every target at 45.0 req/s (90% of LiteLLM's peak), streaming (time to first token)" in markdown
    )
    assert "open loop at 45.0 streaming req/s | 2.50 / 4.00 |" in markdown
    assert "| Lexora stack over Triton direct | 2.50 |" in markdown
    assert "| TTFT p50 ms |" in markdown.split("streaming (time to first token)")[1]
    # without the section the headline has no streaming open-loop row
    assert "streaming req/s" not in report.render_markdown({**_results(), "headline": report.headline(_results())})


def test_memory_growth_per_ten_thousand_requests() -> None:
    assert report.per_10k(100.0, 101.0, 5000) == 2.0
    assert report.per_10k(100.0, 101.0, 0) is None


def test_profile_summary_leaves_idle_threads_out() -> None:
    collapsed = "\n".join(
        [
            "process 1:x;main (lexora_router/app.py:5);Runner.run (asyncio/runners.py:118) 50",
            "process 1:x;main (lexora_router/app.py:5);Router.run (lexora_router/generation.py:80);"
            "InferResult.as_numpy (tritonclient/grpc/_infer_result.py:40) 30",
            "process 1:x;main (lexora_router/app.py:5);Router.run (lexora_router/generation.py:80);"
            "BaseModel.model_dump_json (pydantic/main.py:10) 20",
            "process 1:x;Thread._bootstrap (threading.py:1002);Queue.get (queue.py:171);"
            "Condition.wait (threading.py:327) 400",
        ]
    )
    summary = pyspy_summary.summarize_collapsed(collapsed)
    assert summary["samples"] == 100 and summary["idle_samples"] == 400
    areas = {e["name"]: e["share"] for e in summary["self_by_area"]}
    assert areas["tritonclient (request/response building)"] == 0.3
    assert areas["event loop in C (uvloop: epoll, socket reads, callbacks)"] == 0.5
    functions = {e["name"]: e["share"] for e in summary["inclusive_key_functions"]}
    assert functions["Router.run (lexora_router/generation.py)"] == 0.5
    assert "main (lexora_router/app.py)" not in functions
    with_cpu = pyspy_summary.with_cpu(summary, 4.0)
    assert with_cpu["self_by_area"][0]["ms_per_request"] == 2.0
    assert "Router.run" in pyspy_summary.render_text("router", with_cpu)


def _read(raw: bytes, marker: bytes | None) -> tuple:
    async def go() -> tuple:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await loadgen.read_response(reader, marker)

    return asyncio.run(go())


def test_loadgen_reads_chunked_and_sized_bodies_and_finds_the_first_token() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ndata: {\r\n12\r\ndata: Hello there\n\r\n0\r\n\r\n"
    )
    response, reusable = _read(chunked, b"Hello")
    assert response.status == 200 and reusable and response.first_at > 0
    sized = b"HTTP/1.1 402 Payment Required\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    response, reusable = _read(sized, None)
    assert response.status == 402 and not reusable and response.first_at == 0


def test_loadgen_renders_one_request_per_key() -> None:
    requests = loadgen.build_requests("http://127.0.0.1:8080/v1/chat/completions", b"{}", [], ["k1", "k2"])
    assert len(requests) == 2
    assert requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Authorization: Bearer k2\r\n" in requests[1] and requests[1].endswith(b"\r\n\r\n{}")


def _open_loop(rate: float, duration: float, in_flight: int, answer_after_s: float) -> dict:
    """bench.tools.loadgen's open loop against a server that answers each request after a delay,
    one request at a time per connection."""

    async def go() -> dict:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                    while await reader.readuntil(b"\r\n\r\n") and await reader.readexactly(2):  # body: {}
                        await asyncio.sleep(answer_after_s)
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        args = argparse.Namespace(
            url=f"http://127.0.0.1:{port}/x",
            rate=rate,
            concurrency=in_flight,
            duration=duration,
            requests=0,
            timeout=30.0,
            marker="",
        )
        try:
            return await loadgen.Run(args, loadgen.build_requests(args.url, b"{}", [], [])).run()
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(go())


def test_loadgen_open_loop_sends_on_schedule_and_counts_waiting_from_when_a_request_was_due() -> None:
    # 20 requests are due in 0.2 s; one connection, 50 ms per answer: they queue behind each other.
    result = _open_loop(rate=100, duration=0.2, in_flight=1, answer_after_s=0.05)
    assert result["requests"] == 20 and result["ok"] == 20 and result["rate"] == 100
    assert result["waited_for_a_connection"] >= 15
    # The last one was due at 0.19 s and answered after 20 answers of 50 ms each (>= 1 s): its
    # latency counts its wait. A closed loop would have reported 50 ms for every request.
    assert max(result["latency_ms"]) >= 800
    assert len(result["late_ms"]) == 20


def test_loadgen_open_loop_opens_connections_as_needed() -> None:
    result = _open_loop(rate=200, duration=0.1, in_flight=64, answer_after_s=0.03)
    assert result["requests"] == 20 and result["ok"] == 20
    assert result["waited_for_a_connection"] == 0
    assert all(latency >= 30 for latency in result["latency_ms"])
