"""Per-replica routing in the cluster in a box (issue 24, item 5): the real operator publishes every
ready SmolLM2 Triton pod from the Service's EndpointSlice, the router dials each pod's IP, and the
OpenAI SDK is answered through the gateway.

In order, on one module-scoped box (conftest.py), with at most two Triton pods serving at a time:
- scaled from 1 to 2 replicas (`kubectl scale`), both replicas serve and split steady load within
  60/40;
- requests sharing a long system prompt stick to one replica while other traffic uses both;
- a pod deleted in the middle of a burst loses no request that had produced nothing: each completes,
  or, if it had streamed output, ends with engine_error; every request is on record once and only
  the completed ones are charged;
- a 90/10 canary (a second ModelDeployment of the same model id, `spec.traffic.weight`) splits 200
  requests as asked, within 5 points, and each ModelDeployment's status shows its share;
- with `autoscaling.minReplicas: 0` the model goes to zero replicas when idle; a request is then
  held by the router, the replica count goes to 1 (the operator hears router.v1.model.demanded), and
  it is answered. The time to first token from zero is printed.

Which replica served a request is read from the router's log (`generation finished`, by the request
id the client got: the endpoint is "<namespace>/<pod>"), and checked against each pod's own Triton
counter (nv_inference_request_success, read from the pod's IP).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from box_kubectl import Kubectl, eventually, sample
from cluster_box import NAMESPACE, Box

from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_TRITON_MODEL

pytestmark = pytest.mark.timeout(1200)

MAIN = "smollm2-135m-instruct"  # manifests/samples/smollm2-cpu.yaml
CANARY = "smollm2-canary"
SPLIT_REQUESTS = 40
CANARY_REQUESTS = 200
SCALE_TO_ZERO_AFTER_S = 30  # the CRD's minimum


def smollm2(name: str = MAIN) -> dict[str, Any]:
    """The SmolLM2 CPU sample, with one llama.cpp thread per replica (the sample's two would have two
    replicas spin four threads on the box's two cores)."""
    manifest = sample("smollm2-cpu.yaml")
    manifest["metadata"]["name"] = name
    manifest["spec"]["triton"]["parameters"]["n_threads"] = "1"
    return manifest


@pytest.fixture(scope="module")
def kubectl(box: Box) -> Kubectl:
    return Kubectl(box)


@pytest.fixture(scope="module")
def account(box: Box) -> Any:
    return box.platform.create_account(credits_micro=50_000_000)


@pytest.fixture(scope="module")
def client(box: Box, account: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=box.platform.base_url, api_key=account.api_key, max_retries=0, timeout=120)


# ---- who served what -------------------------------------------------------------------------------


def router_endpoints(box: Box) -> dict[str, str]:
    """request id -> the endpoint that served it, from the router's `generation finished` lines."""
    log = box.platform.config.state_dir / "logs" / "router.log"
    served: dict[str, str] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"generation finished"' not in line:
            continue
        with_fields = json.loads(line)
        if with_fields.get("request_id") and with_fields.get("endpoint"):
            served[with_fields["request_id"]] = str(with_fields["endpoint"])
    return served


def pod_of(box: Box, endpoint: str) -> str:
    """The pod an endpoint name is: "<namespace>/<pod>" (the operator's per-pod endpoints), or an
    address on a pod IP."""
    if endpoint.startswith(f"{NAMESPACE}/"):
        return endpoint.split("/", 1)[1]
    host = endpoint.rsplit(":", 1)[0]
    assert host in box.cluster.addresses, f"endpoint {endpoint!r} is neither a pod nor on a pod IP"
    return box.cluster.addresses[host]


def pods_serving(box: Box, request_ids: list[str], timeout: float = 20) -> dict[str, str]:
    """request id -> the pod that served it, once the router has logged every one."""
    wanted = set(request_ids)

    def logged() -> dict[str, str] | None:
        served = router_endpoints(box)
        return {rid: served[rid] for rid in wanted} if wanted <= served.keys() else None

    try:
        endpoints = eventually(logged, box, timeout, "the router's log of every request")
    except AssertionError:
        missing = sorted(wanted - router_endpoints(box).keys())
        raise AssertionError(f"{len(missing)} request(s) not in the router's log, e.g. {missing[:3]}") from None
    return {rid: pod_of(box, endpoint) for rid, endpoint in endpoints.items()}


def owner_of(box: Box, pod: str) -> str:
    """The ModelDeployment (its Deployment) a pod of the box belongs to: <deployment>-<hash>-<n>."""
    return pod.rsplit("-", 2)[0]


def triton_metric(box: Box, pods: list[str], metric: str) -> dict[str, int]:
    """A metric of the model on each pod, as its Triton reports it on the pod's IP."""
    values = {}
    for name in pods:
        state = box.cluster.pods[name]
        text = httpx.get(f"http://{state.ip}:8002/metrics", timeout=10).text
        found = re.search(rf'^{metric}{{model="{LOCAL_TRITON_MODEL}",[^}}]*}} (\S+)$', text, re.M)
        values[name] = int(float(found.group(1))) if found else 0
    return values


def triton_successes(box: Box, pods: list[str]) -> dict[str, int]:
    """Each pod's own count of successful inferences of the model."""
    return triton_metric(box, pods, "nv_inference_request_success")


def wait_until_idle(box: Box, pods: list[str]) -> None:
    """No request waits in any pod's Triton queue (the kubelet's probes, which pile up when the CPU is
    shared and slow, included), and the router has had time to read so (it reads every ~1 s)."""
    pending = "nv_inference_pending_request_count"
    eventually(lambda: not any(triton_metric(box, pods, pending).values()), box, 60, "the replicas' queues empty")
    time.sleep(2)


# ---- load --------------------------------------------------------------------------------------


def chat(client: openai.OpenAI, content: str, max_tokens: int = 8, system: str | None = None) -> str:
    """One chat; its request id."""
    messages: list[dict[str, str]] = [{"role": "user", "content": content}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    reply = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0,
    )
    assert reply.choices[0].message.content is not None
    return reply.id


def steady_load(client: openai.OpenAI, requests: int, concurrency: int, max_tokens: int) -> list[str]:
    """`requests` distinct short chats, `concurrency` at a time; their request ids."""
    pool = ThreadPoolExecutor(concurrency)
    try:
        futures = [pool.submit(chat, client, f"{i}: name a colour.", max_tokens) for i in range(requests)]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(cancel_futures=True)  # a failure (or the time limit) sends no more


def ready_endpoints(box: Box) -> list[str]:
    record = box.platform.registry_record(LOCAL_CHAT_MODEL)
    return sorted(e.name for e in record.endpoints if e.ready)


def wait_replicas(kubectl: Kubectl, name: str, count: int, timeout: float = 240) -> list[str]:
    """`count` ready pods of `name` (none terminating), each published in the registry; their names."""
    box = kubectl.box

    def published() -> list[str] | None:
        pods = kubectl.pods(name)
        names = [s.name for s in pods if s.ready]
        if len(pods) != count or len(names) != count:
            return None
        listed = {pod_of(box, e) for e in ready_endpoints(box)}
        return names if set(names) <= listed else None

    try:
        return eventually(published, box, timeout, f"{count} ready replica(s) of {name} in the registry")  # type: ignore[no-any-return]
    except AssertionError as error:
        raise AssertionError(f"{error}\nregistry: {ready_endpoints(box)}\n{kubectl.pod_logs()}") from None


def serving(kubectl: Kubectl, replicas: int) -> list[str]:
    """The SmolLM2 sample applied (if an earlier scenario has not), at `replicas`; its pods."""
    if kubectl.get(MAIN) is None:
        assert kubectl.apply(smollm2()).is_success
    scaled = kubectl.scale(MAIN, replicas)
    assert scaled.status_code == 200, scaled.text
    return wait_replicas(kubectl, MAIN, replicas)


def shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {key: round(100 * n / total, 1) for key, n in sorted(counts.items())}


# ---- the scenarios -----------------------------------------------------------------------------


def test_scaled_to_two_replicas_both_serve_and_split_the_load(
    kubectl: Kubectl, client: openai.OpenAI, box: Box
) -> None:
    assert kubectl.apply(smollm2()).is_success
    kubectl.wait_ready(MAIN, timeout=240)
    [first] = wait_replicas(kubectl, MAIN, 1)
    assert chat(client, "Say hello.")

    scaled = kubectl.scale(MAIN, 2)
    assert scaled.status_code == 200, scaled.text
    pods = wait_replicas(kubectl, MAIN, 2)
    assert first in pods
    slices = box.cluster.api.list("discovery.k8s.io/v1", "endpointslices", NAMESPACE)
    [main_slice] = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == MAIN]
    assert sorted(e["targetRef"]["name"] for e in main_slice["endpoints"]) == pods

    before = triton_successes(box, pods)
    ids = steady_load(client, SPLIT_REQUESTS, concurrency=4, max_tokens=8)
    served = pods_serving(box, ids)
    after = triton_successes(box, pods)
    counts = Counter(served.values())
    print(f"\nscale 1 -> 2: {SPLIT_REQUESTS} requests per pod {dict(counts)}, shares {shares(counts)}")
    assert set(counts) == set(pods), counts
    for pod in pods:
        assert 0.4 <= counts[pod] / SPLIT_REQUESTS <= 0.6, f"split outside 60/40: {dict(counts)}"
        # The pod's own Triton counted them (and the kubelet's and router's probes besides).
        assert after[pod] - before[pod] >= counts[pod], (before, after, counts)


# Several of the router's 256-character affinity blocks, a couple of hundred tokens: long enough to
# be worth its cache, short enough for a busy CPU.
LONG_SYSTEM_PROMPT = " ".join(
    f"Rule {i}: about item {i}, quote {i * 3 % 17 + 2} euros a day and the deposit." for i in range(12)
)
PREFIXED_REQUESTS = 6


def test_a_shared_prefix_sticks_to_one_replica(kubectl: Kubectl, client: openai.OpenAI, box: Box) -> None:
    pods = serving(kubectl, 2)
    # One after the other, each once no replica has a queue (the router moves a prefix off a replica
    # whose queue is longer than the others' by its slack): requests with the long system prompt,
    # each followed by one without it.
    prefixed, others = [], []
    for i in range(PREFIXED_REQUESTS):
        wait_until_idle(box, pods)
        prefixed.append(
            chat(client, f"Question {i}: what does item {i} cost?", max_tokens=2, system=LONG_SYSTEM_PROMPT)
        )
        others.append(chat(client, f"{i}: name an animal.", max_tokens=2))

    served = pods_serving(box, prefixed + others)
    prefix_pods = Counter(served[rid] for rid in prefixed)
    other_pods = Counter(served[rid] for rid in others)
    print(f"\nshared prefix: {dict(prefix_pods)}; the requests between them: {dict(other_pods)}")
    assert len(prefix_pods) == 1, f"the shared prefix went to several replicas: {dict(prefix_pods)}"
    # Both replicas took requests meanwhile: the prefix chose its replica, not the only one.
    assert set(prefix_pods) | set(other_pods) == set(pods), (dict(prefix_pods), dict(other_pods))


@dataclass
class StreamOutcome:
    """What one streaming client saw."""

    request_id: str | None
    status: int
    deltas: int = 0
    completed: bool = False
    error_type: str | None = None


LONG_JOB = "Write a long story about a lighthouse keeper and a storm, in many short sentences."


def stream(
    box: Box,
    api_key: str,
    on_token: Callable[[int], Any],
    content: str = LONG_JOB,
    max_tokens: int = 48,
    timeout: float = 180,
) -> StreamOutcome:
    """A streaming chat over HTTP (to see each event); `on_token(n)` after the n-th content delta."""
    body = {
        "model": LOCAL_CHAT_MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    url = f"{box.platform.base_url}/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            response.read()
            return StreamOutcome(request_id, response.status_code, error_type=response.json()["error"]["type"])
        outcome = StreamOutcome(request_id, 200)
        done = False
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line.removeprefix("data: "))
            outcome.request_id = outcome.request_id or event.get("id")
            if "error" in event:
                outcome.error_type = event["error"]["type"]
            elif event.get("choices") and event["choices"][0]["delta"].get("content"):
                outcome.deltas += 1
                on_token(outcome.deltas)
        outcome.completed = done and outcome.error_type is None
        return outcome


def test_a_pod_deleted_mid_burst_loses_no_request_that_had_produced_nothing(
    kubectl: Kubectl, box: Box, account: Any
) -> None:
    pods = serving(kubectl, 2)
    before = len(box.platform.usage_rows(account.account_id))
    started = threading.Event()
    burst = 8  # each replica serves one at a time: one streaming on the doomed pod, the rest queued
    with ThreadPoolExecutor(burst) as pool:
        futures = [
            pool.submit(stream, box, account.api_key, lambda deltas: deltas == 3 and started.set())
            for _ in range(burst)
        ]
        assert started.wait(180), f"no stream produced tokens: {[f.result() for f in futures if f.done()]}"
        doomed = pods[0]
        # SIGKILL a second after SIGTERM: the stream in progress there is cut.
        kubectl.delete_pod(doomed, grace=1)
        outcomes = [future.result() for future in futures]

    print(f"\npod {doomed} deleted mid-burst: {outcomes}")
    for outcome in outcomes:
        if outcome.deltas == 0:
            assert outcome.completed, f"a request that had produced nothing was lost: {outcome}"
        else:
            assert outcome.completed or outcome.error_type == "engine_error", outcome
    # Every request is on record once; what failed is not charged; the ledger adds up.
    ids = [o.request_id for o in outcomes]
    assert all(ids) and len(set(ids)) == burst, ids
    rows = [
        r for r in box.platform.wait_for_usage_rows(account.account_id, before + burst) if r["request_id"] in set(ids)
    ]
    assert sorted(r["request_id"] for r in rows) == sorted(ids)  # type: ignore[type-var]
    by_id = {r["request_id"]: r for r in rows}
    for outcome in outcomes:
        row = by_id[outcome.request_id]
        if outcome.completed:
            assert row["status_code"] == 200 and row["cost_pico"] > 0, row
        else:
            assert row["status_code"] == 502 and row["cost_pico"] == 0, row
    assert box.platform.settled_balance(account.account_id).held_micro == 0
    box.platform.assert_ledger_consistent(account.account_id)
    # The Deployment replaced the pod.
    assert doomed not in wait_replicas(kubectl, MAIN, 2)


def canary_manifest() -> dict[str, Any]:
    manifest = smollm2(CANARY)
    manifest["spec"]["replicas"] = 1
    manifest["spec"]["traffic"] = {"weight": 10}
    return manifest


def test_a_90_10_canary_splits_as_asked(kubectl: Kubectl, client: openai.OpenAI, box: Box) -> None:
    serving(kubectl, 1)
    weighted = kubectl.patch(MAIN, {"spec": {"traffic": {"weight": 90}}})
    assert weighted.status_code == 200, weighted.text
    assert kubectl.apply(canary_manifest()).is_success
    kubectl.wait_ready(CANARY, timeout=240)
    kubectl.wait_ready(MAIN)

    def both_published() -> bool:
        record = box.platform.registry_record(LOCAL_CHAT_MODEL)
        owners = {owner_of(box, pod_of(box, e.name)) for e in record.endpoints if e.ready}
        weights = {d.name: d.weight for d in record.deployments}
        return owners == {MAIN, CANARY} and weights == {MAIN: 90, CANARY: 10}

    eventually(both_published, box, 60, "both ModelDeployments' replicas in one record, weighted 90/10")

    def status_shares() -> dict[str, Any] | None:
        found = {
            name: ((kubectl.get(name) or {}).get("status") or {}).get("traffic", {}).get("share")
            for name in (MAIN, CANARY)
        }
        return found if found == {MAIN: 90, CANARY: 10} else None

    eventually(status_shares, box, 30, "status.traffic.share 90 and 10")

    ids = steady_load(client, CANARY_REQUESTS, concurrency=4, max_tokens=1)
    served = pods_serving(box, ids)
    counts = Counter(owner_of(box, pod) for pod in served.values())
    print(f"\ncanary 90/10 over {CANARY_REQUESTS} requests: {dict(counts)}, shares {shares(counts)}")
    assert abs(100 * counts[CANARY] / CANARY_REQUESTS - 10) <= 5, dict(counts)
    assert counts[MAIN] + counts[CANARY] == CANARY_REQUESTS


def test_a_model_at_zero_replicas_wakes_for_a_held_request(kubectl: Kubectl, box: Box, account: Any) -> None:
    if kubectl.get(CANARY) is not None:
        kubectl.delete(CANARY)
    serving(kubectl, 1)
    autoscaling = {
        "provider": "keda",
        "minReplicas": 0,
        "maxReplicas": 1,
        "scaleToZeroAfterSeconds": SCALE_TO_ZERO_AFTER_S,
    }
    changed = kubectl.patch(MAIN, {"spec": {"traffic": {"weight": 100}, "autoscaling": autoscaling}})
    assert changed.status_code == 200, changed.text
    assert (kubectl.get(MAIN) or {})["spec"]["autoscaling"]["scaleToZeroAfterSeconds"] == SCALE_TO_ZERO_AFTER_S

    def at_zero() -> bool:
        deployment = kubectl.deployment(MAIN) or {}
        gone = not [s for s in list(box.cluster.pods.values()) if s.owner in (MAIN, CANARY)]
        return deployment.get("spec", {}).get("replicas") == 0 and gone and not ready_endpoints(box)

    eventually(at_zero, box, SCALE_TO_ZERO_AFTER_S + 120, f"{MAIN} scaled to zero after {SCALE_TO_ZERO_AFTER_S} s idle")
    record = box.platform.registry_record(LOCAL_CHAT_MODEL)
    assert record.wakes_on_request, record

    # Watch the replica count and the pod while the request is held.
    seen: dict[str, float] = {}
    watching = threading.Event()

    def watch(t0: float) -> None:
        while not watching.is_set():
            if (kubectl.get(MAIN) or {}).get("spec", {}).get("replicas") == 1:
                seen.setdefault("asked for 1", time.monotonic() - t0)  # the operator heard the demand
            if (kubectl.deployment(MAIN) or {}).get("spec", {}).get("replicas") == 1:
                seen.setdefault("replicas 1", time.monotonic() - t0)
            if any(s.owner == MAIN and s.ready for s in list(box.cluster.pods.values())):
                seen.setdefault("pod ready", time.monotonic() - t0)
            time.sleep(0.1)

    first_token: list[float] = []
    t0 = time.monotonic()
    watcher = threading.Thread(target=watch, args=(t0,), daemon=True)
    watcher.start()
    try:
        outcome = stream(
            box,
            account.api_key,
            lambda deltas: deltas == 1 and first_token.append(time.monotonic() - t0),
            content="Say hello.",
            max_tokens=8,
            timeout=400,
        )
    finally:
        watching.set()
        watcher.join()
    total = time.monotonic() - t0
    assert first_token, outcome
    ttft = first_token[0]
    asked, woke = seen.get("asked for 1", float("nan")), seen.get("replicas 1", float("nan"))
    ready = seen.get("pod ready", float("nan"))
    print(
        f"\ntime to first token from zero: {ttft:.1f} s (ModelDeployment asked for 1 replica after {asked:.1f} s, "
        f"its Deployment after {woke:.1f} s, pod ready after {ready:.1f} s; answered in {total:.1f} s)"
    )
    assert outcome.completed and outcome.deltas > 0, outcome
    assert "replicas 1" in seen and "pod ready" in seen, seen
    # Held, not refused: its first token came after the replica it woke was ready.
    assert ttft >= seen["pod ready"]
