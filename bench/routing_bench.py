"""The routing benchmark: time to first token across N simulated LLM replicas, round robin against
the router's own policy (issue 24, item 6; docs/benchmarks.md, "Routing").

    python -m bench.routing_bench               # ~4.5 minutes on 2 cores (make bench-routing)
    BENCH_QUICK=1 python -m bench.routing_bench  # ~2.5 minutes: shorter measured windows
    python -m bench.routing_bench --replicas 4 --rate-share 0.7 --duration 60

The platform is the real one on 127.0.0.1: a private Postgres, nats-server, the five services, and N
tritonservers on CPU, each serving bench/routing/model-repo/lexora-sim-llm, a Python-backend model
that behaves like one LLM replica (batch slots and a queue, prefill time for the prompt tokens not in
its prefix cache, time per decoded token; its docstring and config.pbtxt say how). The registry
record lists the N replicas as endpoints, each with its gRPC, HTTP and metrics addresses and its
deployment, as the operator publishes a model's pods.

For each policy (LEXORA_ROUTER_POLICY=round_robin, then least_outstanding) the replicas and the
router start afresh (cold prefix caches, no affinity remembered) and the same workload is sent
through the gateway: open-loop Poisson arrivals at `--rate-share` of the replicas' capacity, each
request one of K shared system prompts (~1,000 tokens each) plus a short unique question, streamed
(`stream: true`) for `--max-tokens` tokens on average. The arrival times and prompts are drawn once from a
seed, so both policies get the very same sequence. Time to first token is measured at the client,
from the request's start to the first content delta, for requests started after the warm-up. The
prefix-cache hit rate is read from the replicas' own counters (prompt tokens found in the cache over
all prompt tokens), over the measured window.

Capacity is what the replicas can sustain with no prefix-cache hit: replicas × batch slots ÷ the
time one request holds a slot (full prefill + max_tokens decode steps at a full batch). Round robin
spreads every system prompt over every replica, so their caches (smaller than the K prompts) thrash;
a policy with prefix affinity keeps each prompt on a replica that holds it.

Results: bench/results/routing-latest.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import BENCH, RESULTS, log, pg, procstat, report
from bench.accounts import create_accounts
from lexora_contracts.registry import DeploymentRef, Endpoint, ModelRecord, Pricing
from lexora_dev import stack
from lexora_dev.processes import ManagedProcess, free_port, http_ok, wait_until
from lexora_dev.triton_server import triton_command

SIM_TRITON = "lexora-sim-llm"
SIM_REPO = BENCH / "routing" / "model-repo"
MODEL_ID = "bench/sim-llm"
DEPLOYMENT = DeploymentRef(namespace="bench", name="sim-llm")
POLICIES = ("round_robin", "least_outstanding")
RESULT_FILE = RESULTS / "routing-latest.json"
# Words the system prompts and questions are made of (any text works: the sim counts bytes).
VOCABULARY = (
    "account invoice shipment customs pallet courier refund warehouse route carrier tariff order "
    "delivery parcel label manifest tracking address schedule container freight port vessel "
    "inspection clearance policy contract quote weight volume insurance claim damage return"
)
WORDS = tuple(VOCABULARY.split())
METRIC_LINE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$")


# -- the simulated replica's parameters (its config.pbtxt) --


PARAMETER = re.compile(r'(parameters:\s*\{\s*key:\s*"(\w+)"\s*value:\s*\{\s*string_value:\s*")([^"]*)(")')


def sim_parameters(config: Path = SIM_REPO / SIM_TRITON / "config.pbtxt") -> dict[str, float]:
    return {match.group(2): float(match.group(3)) for match in PARAMETER.finditer(config.read_text())}


def with_parameters(config_text: str, overrides: dict[str, str]) -> str:
    """The sim's config.pbtxt with some of its `parameters` set to other values."""
    unknown = set(overrides) - {match.group(2) for match in PARAMETER.finditer(config_text)}
    if unknown:
        raise ValueError(f"the sim has no parameter {', '.join(sorted(unknown))}")
    return PARAMETER.sub(lambda m: m.group(1) + overrides.get(m.group(2), m.group(3)) + m.group(4), config_text)


def sim_repository(state: Path, overrides: dict[str, str]) -> Path:
    """A model repository holding the sim: bench/routing/model-repo itself, or a copy of its config
    with `overrides` (--sim NAME=VALUE) beside a link to its code."""
    if not overrides:
        return SIM_REPO
    model = state / "sim-model-repo" / SIM_TRITON
    model.mkdir(parents=True)
    (model / "1").symlink_to(SIM_REPO / SIM_TRITON / "1")
    config = (SIM_REPO / SIM_TRITON / "config.pbtxt").read_text()
    (model / "config.pbtxt").write_text(with_parameters(config, overrides))
    return model.parent


def slot_seconds(params: dict[str, float], prompt_tokens: int, max_tokens: int) -> float:
    """How long one request holds a batch slot with no prefix-cache hit and a full batch."""
    prefill = prompt_tokens * params["prefill_ms_per_token"] / 1000
    step = params["decode_ms_per_step"] * (1 + params["decode_growth_per_sequence"] * (params["batch_slots"] - 1))
    return prefill + max_tokens * step / 1000


def capacity_rps(params: dict[str, float], replicas: int, prompt_tokens: int, max_tokens: int) -> float:
    return replicas * params["batch_slots"] / slot_seconds(params, prompt_tokens, max_tokens)


# -- the workload --


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds after the start
    prefix: int  # which system prompt
    question: str
    max_tokens: int


def system_prompts(count: int, tokens: int, bytes_per_token: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = [f"You are assistant {i} of the logistics desk."]
        while sum(len(w) + 1 for w in words) <= tokens * bytes_per_token:
            words.append(rng.choice(WORDS))
        out.append(" ".join(words)[: tokens * bytes_per_token])
    return out


def arrivals(rate: float, duration: float, prefixes: int, max_tokens: int, seed: int) -> list[Arrival]:
    """Poisson arrivals at `rate` per second for `duration` seconds, each with a random system
    prompt and a length drawn uniformly from max_tokens/2 to 3·max_tokens/2 (mean max_tokens)."""
    rng = random.Random(seed)
    out, at = [], 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= duration:
            return out
        question = f"Request {len(out)}: " + " ".join(rng.choice(WORDS) for _ in range(12)) + "?"
        length = rng.randint(max(1, max_tokens // 2), max_tokens * 3 // 2)
        out.append(Arrival(at, rng.randrange(prefixes), question, length))


@dataclass
class Outcome:
    started: float
    ttft_ms: float | None = None
    status: int = 0
    error: str | None = None


async def one_request(client: httpx.AsyncClient, body: dict[str, Any], outcome: Outcome) -> None:
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            outcome.status = response.status_code
            if response.status_code != 200:
                outcome.error = (await response.aread()).decode(errors="replace")[:200]
                return
            async for line in response.aiter_lines():
                if outcome.ttft_ms is None and line.startswith("data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        outcome.ttft_ms = (time.perf_counter() - outcome.started) * 1000
    except (httpx.HTTPError, ValueError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]


async def send_workload(
    gateway_port: int, key: str, prompts: list[str], schedule: list[Arrival]
) -> list[tuple[Arrival, Outcome]]:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx.Timeout(120.0, connect=10.0)
    results: list[tuple[Arrival, Outcome]] = []
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{gateway_port}", headers=headers, limits=limits, timeout=timeout
    ) as client:
        tasks = []
        start = time.perf_counter()
        for arrival in schedule:
            delay = start + arrival.at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {
                "model": MODEL_ID,
                "messages": [
                    {"role": "system", "content": prompts[arrival.prefix]},
                    {"role": "user", "content": arrival.question},
                ],
                "max_tokens": arrival.max_tokens,
                "stream": True,
            }
            outcome = Outcome(started=time.perf_counter())
            results.append((arrival, outcome))
            tasks.append(asyncio.create_task(one_request(client, body, outcome)))
        await asyncio.gather(*tasks)
    return results


# -- the replicas' metrics --


def scrape(address: str) -> dict[tuple[str, str], float]:
    """(metric name, labels text) -> value, for the sim's families and Triton's request counters."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and (match.group(1).startswith(("lexora_sim", "nv_trt_llm")) or SIM_TRITON in match.group(2)):
            out[(match.group(1), match.group(2))] = float(match.group(3))
    return out


def prompt_tokens(sample: dict[tuple[str, str], float]) -> tuple[float, float]:
    """(prompt tokens found in the prefix cache, prompt tokens prefilled) so far."""
    family = "lexora_sim_prompt_tokens_total"
    hit = sum(v for (name, labels), v in sample.items() if name == family and 'cache="hit"' in labels)
    miss = sum(v for (name, labels), v in sample.items() if name == family and 'cache="miss"' in labels)
    return hit, miss


def waiting_requests(sample: dict[tuple[str, str], float]) -> float:
    family = "nv_trt_llm_request_metrics"
    return sum(v for (name, labels), v in sample.items() if name == family and 'request_type="waiting"' in labels)


class GaugeSampler:
    """Reads every replica's waiting-requests gauge every 0.5 s while the workload runs."""

    def __init__(self, addresses: list[str]):
        self.addresses = addresses
        self.waiting: list[list[float]] = [[] for _ in addresses]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for i, address in enumerate(self.addresses):
                with contextlib.suppress(OSError, ValueError):
                    sample = scrape(address)
                    self.waiting[i].append(waiting_requests(sample))

    def __enter__(self) -> GaugeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the platform --


@dataclass
class Replica:
    index: int
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    http: str
    grpc: str
    metrics: str
    process: ManagedProcess | None = None

    def endpoint(self) -> Endpoint:
        return Endpoint(
            name=f"sim-{self.index}",
            grpc_address=self.grpc,
            http_address=self.http,
            metrics_address=self.metrics,
            deployment=DEPLOYMENT.key,
        )

    def start(self) -> None:
        self.process = ManagedProcess(f"tritonserver-{self.index}", self.argv, self.log_path, env=self.env).start()

    def wait_ready(self) -> None:
        assert self.process is not None
        wait_until(lambda: http_ok(f"http://{self.http}/v2/health/ready"), 180, self.process.name, self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@dataclass
class Platform:
    state: Path
    replicas: int
    repository: Path = SIM_REPO
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    sims: list[Replica] = field(default_factory=list)
    exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    config: stack.ServiceConfig | None = None
    nats_url: str = ""
    policy: str = ""  # the running router's
    served: bool = False  # the replicas have served a workload since they started (warm caches)

    def start(self) -> None:
        for i in range(self.replicas):
            http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
            state = self.state / f"triton-{i}"
            argv, env = triton_command(self.repository, state, http_port, grpc_port, metrics_port)
            self.sims.append(
                Replica(
                    i,
                    argv,
                    env,
                    state / "logs" / "triton.log",
                    f"127.0.0.1:{http_port}",
                    f"127.0.0.1:{grpc_port}",
                    f"127.0.0.1:{metrics_port}",
                )
            )
        self.start_replicas()
        database_url = self.exits.enter_context(pg.private_postgres(self.state / "pg")).url
        nats_port = free_port()
        self.procs["nats"] = stack.start_nats(self.state, nats_port)
        self.nats_url = f"nats://127.0.0.1:{nats_port}"
        stack.prepare_database(database_url)
        stack.publish_catalog(self.nats_url, [self.record()])
        self.config = stack.ServiceConfig(self.nats_url, database_url, self.state, free_port(), log_level="WARNING")
        for service in stack.SERVICES:
            if service != "router":
                self.procs[service] = stack.start_service(service, self.config)
        self.start_router(POLICIES[0])

    def record(self) -> ModelRecord:
        return ModelRecord(
            id=MODEL_ID,
            owned_by="lexora-bench",
            triton_model=SIM_TRITON,
            context_length=8192,
            pricing=Pricing(input_micro_per_mtok=1_000_000, output_micro_per_mtok=1_000_000),
            capabilities=["chat"],
            created=1730000000,
            endpoints=[sim.endpoint() for sim in self.sims],
            deployments=[DEPLOYMENT],
        )

    def start_replicas(self) -> None:
        """Every replica at once (fresh: empty prefix caches), then wait for all."""
        for sim in self.sims:
            sim.start()
        for sim in self.sims:
            sim.wait_ready()

    def restart_replicas(self) -> None:
        for sim in self.sims:
            sim.stop()
        self.start_replicas()

    def start_router(self, policy: str) -> None:
        """A fresh router with `policy`; returns once it has probed every replica."""
        assert self.config is not None
        if "router" in self.procs:
            self.procs.pop("router").stop()
        config = stack.ServiceConfig(
            **{**self.config.__dict__, "extra_env": {"LEXORA_ROUTER_POLICY": policy}},
        )
        since = time.time()
        self.procs["router"] = stack.start_service("router", config, f"router-{policy}")
        self.policy = policy
        stack.wait_for_gateway(self.config.gateway_port, self.procs["gateway"])
        failing = stack.wait_for_warm_up(self.nats_url, [self.record()], since, timeout=120, grace=10)
        if failing:
            raise RuntimeError(f"replicas not serving after the router started: {failing}")

    def roots(self) -> dict[str, int]:
        roots = {name: p.proc.pid for name, p in self.procs.items() if p.proc is not None and p.alive}
        for sim in self.sims:
            if sim.process is not None and sim.process.proc is not None:
                roots[f"triton-{sim.index}"] = sim.process.proc.pid
        return roots

    def stop(self) -> None:
        for process in reversed(list(self.procs.values())):
            with contextlib.suppress(Exception):
                process.stop()
        for sim in self.sims:
            with contextlib.suppress(Exception):
                sim.stop()
        self.exits.close()


# -- one policy's run --


def measure_policy(
    platform: Platform, policy: str, key: str, prompts: list[str], schedule: list[Arrival], args: argparse.Namespace
) -> dict[str, Any]:
    if platform.policy != policy or platform.served:
        platform.restart_replicas()
        platform.start_router(policy)
    platform.served = True
    assert platform.config is not None
    addresses = [sim.metrics for sim in platform.sims]
    meter = procstat.CpuMeter(platform.roots())
    before: list[dict[tuple[str, str], float]] = []
    window_opened = threading.Event()

    async def open_window() -> None:
        await asyncio.sleep(args.warmup)
        before.extend(await asyncio.to_thread(lambda: [scrape(a) for a in addresses]))
        window_opened.set()

    async def run() -> list[tuple[Arrival, Outcome]]:
        window = asyncio.create_task(open_window())
        results = await send_workload(platform.config.gateway_port, key, prompts, schedule)
        await window
        return results

    log(f"{policy}: {len(schedule)} requests over {args.warmup + args.duration:g} s")
    meter.start()
    with GaugeSampler(addresses) as gauges:
        results = asyncio.run(run())
    cpu = meter.stop()
    after = [scrape(a) for a in addresses]

    measured = [(a, o) for a, o in results if a.at >= args.warmup]
    ttft = [o.ttft_ms for _, o in measured if o.ttft_ms is not None]
    failed = [o for _, o in measured if o.ttft_ms is None]
    per_replica = []
    hit_total = miss_total = 0.0
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        hit0, miss0 = prompt_tokens(b)
        hit1, miss1 = prompt_tokens(a)
        hit, miss = hit1 - hit0, miss1 - miss0
        hit_total, miss_total = hit_total + hit, miss_total + miss
        waiting = gauges.waiting[i]
        per_replica.append(
            {
                "replica": f"sim-{i}",
                "prompt_tokens": int(hit + miss),
                "hit_rate": round(hit / (hit + miss), 3) if hit + miss else None,
                "mean_waiting": round(sum(waiting) / len(waiting), 2) if waiting else None,
                "max_waiting": max(waiting) if waiting else None,
            }
        )
    total_tokens = hit_total + miss_total
    for row in per_replica:
        row["share"] = round(row["prompt_tokens"] / total_tokens, 3) if total_tokens else None
    out = {
        "policy": policy,
        "requests": len(measured),
        "answered": len(ttft),
        "failed": len(failed),
        "failures": sorted({f"{o.status} {o.error}" for o in failed})[:5],
        "ttft_ms": report.summarize(ttft),
        "prefix_hit_rate": round(hit_total / total_tokens, 3) if total_tokens else None,
        "replicas": per_replica,
        # Cores busy with work outside the benchmark meanwhile: how noisy the machine was.
        "foreign_cores": round(cpu["foreign"] / (args.warmup + args.duration), 2),
        "platform_cores": round(
            sum(v for k, v in cpu.items() if k not in ("foreign", "machine_busy")) / (args.warmup + args.duration), 2
        ),
    }
    log(
        f"{policy}: p50 {out['ttft_ms'].get('p50')} ms, p99 {out['ttft_ms'].get('p99')} ms, "
        f"hit rate {out['prefix_hit_rate']}, {len(failed)} failed"
    )
    return out


def markdown(results: dict[str, Any]) -> str:
    runs = {run["policy"]: run for run in results["runs"]}
    base, ours = runs.get("round_robin"), runs.get("least_outstanding")
    lines = [
        "| policy | answered | p50 TTFT ms | p99 TTFT ms | mean TTFT ms | prefix-cache hit rate | busiest replica |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        shares = [r["share"] for r in run["replicas"] if r["share"] is not None]
        ttft = run["ttft_ms"]
        lines.append(
            f"| {run['policy']} | {run['answered']}/{run['requests']} | {ttft.get('p50', 0):.0f} | "
            f"{ttft.get('p99', 0):.0f} | {ttft.get('mean', 0):.0f} | {run['prefix_hit_rate']:.0%} | "
            f"{max(shares, default=0):.0%} |"
        )
    if base and ours:
        p50 = report.ratio(ours["ttft_ms"].get("p50", 0), base["ttft_ms"].get("p50", 0))
        p99 = report.ratio(ours["ttft_ms"].get("p99", 0), base["ttft_ms"].get("p99", 0))
        lines.append(f"| least_outstanding ÷ round_robin | | {p50} | {p99} | | | |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parser = argparse.ArgumentParser(prog="python -m bench.routing_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", default=quick, help="short windows (BENCH_QUICK=1)")
    parser.add_argument("--replicas", type=int, default=4, help="simulated replicas (tritonservers)")
    parser.add_argument("--prefixes", type=int, default=8, help="shared system prompts (K)")
    parser.add_argument("--prefix-tokens", type=int, default=1000, help="tokens of each system prompt")
    parser.add_argument("--max-tokens", type=int, default=16, help="mean tokens a request asks for")
    parser.add_argument("--rate-share", type=float, default=0.7, help="arrival rate as a share of capacity")
    parser.add_argument("--duration", type=float, help="measured seconds per policy (default 75, quick 15)")
    parser.add_argument("--warmup", type=float, help="seconds sent but not measured (default 10, quick 5)")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument(
        "--sim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set one of the sim's config.pbtxt parameters for this run (repeatable), e.g. prefix_cache_blocks=80",
    )
    args = parser.parse_args(argv)
    args.sim_overrides = dict(item.split("=", 1) for item in args.sim)
    args.duration = args.duration or (15.0 if args.quick else 75.0)
    args.warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 10.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = Path(tempfile.mkdtemp(prefix="lexora-routing-bench-"))
    repository = sim_repository(root, args.sim_overrides)
    params = sim_parameters(repository / SIM_TRITON / "config.pbtxt")
    bytes_per_token = int(params["bytes_per_token"])
    prompts = system_prompts(args.prefixes, args.prefix_tokens, bytes_per_token, args.seed)
    # The prompt the sim sees: the messages as JSON, system prompt and question.
    prompt_tokens_estimate = args.prefix_tokens + 40
    capacity = capacity_rps(params, args.replicas, prompt_tokens_estimate, args.max_tokens)
    rate = capacity * args.rate_share
    schedule = arrivals(rate, args.warmup + args.duration, args.prefixes, args.max_tokens, args.seed)
    started = dt.datetime.now(dt.UTC)
    log(f"{args.replicas} replicas, capacity {capacity:.1f} req/s, sending {rate:.1f} req/s; state in {root}")
    platform = Platform(root, args.replicas, repository)
    runs = []
    ok = False
    try:
        platform.start()
        [(_, key)] = asyncio.run(create_accounts(platform.nats_url, 1, "routing"))
        for policy in POLICIES:
            runs.append(measure_policy(platform, policy, key, prompts, schedule, args))
        ok = True
    finally:
        platform.stop()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"logs kept in {root}/logs and {root}/triton-*/logs")
    results = {
        "started_at": started.isoformat(timespec="seconds"),
        "cpu": procstat.cpu_model(),
        "cores": os.cpu_count(),
        "quick": args.quick,
        "replicas": args.replicas,
        "sim": params,
        "sim_overrides": args.sim_overrides,
        "workload": {
            "prefixes": args.prefixes,
            "prefix_tokens": args.prefix_tokens,
            "max_tokens": args.max_tokens,
            "capacity_rps": round(capacity, 2),
            "rate_share": args.rate_share,
            "rate_rps": round(rate, 2),
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "seed": args.seed,
        },
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    RESULT_FILE.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
