"""The running operator against the kmock API emulator and a real NATS model registry.

The tests play the platform engineer (apply, edit, scale, delete ModelDeployments) and the kubelet
(Deployment status, pods), and assert what a user sees: children in the cluster, the
ModelDeployment's status, and the registry record the gateway answers from (no ready endpoint ->
503 model_unavailable).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from operator_support import RESYNC_SECONDS, Cluster, eventually, load_sample, pod_ip

LLAMA_ID = "meta-llama/Llama-3.2-3B-Instruct"
LLAMA = "llama-3-2-3b-instruct"
FLUX_ID = "black-forest-labs/FLUX.1-schnell"
FLUX = "flux-1-schnell"
# The first Triton pod's own addresses (from its Service's EndpointSlice), not the Service's.
LLAMA_POD = f"{LLAMA}-pod-0"
LLAMA_ADDRESS = f"{pod_ip(LLAMA, 0)}:8001"
LLAMA_HTTP_ADDRESS = f"{pod_ip(LLAMA, 0)}:8000"
LLAMA_METRICS_ADDRESS = f"{pod_ip(LLAMA, 0)}:8002"


async def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    md = await cluster.get("ModelDeployment", name)
    return dict((md or {}).get("status") or {})


async def until_phase(cluster: Cluster, name: str, phase: str, reason: str | None = None) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = await status_of(cluster, name)
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        if status.get("phase") == phase and (reason is None or ready.get("reason") == reason):
            return status
        return None

    return await eventually(check, what=f"{name} phase {phase} {reason or ''}")


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


async def registry_endpoints(cluster: Cluster, model_id: str, want: list[str]) -> None:
    async def check() -> bool:
        record = cluster.record(model_id)
        return record is not None and [e.grpc_address for e in record.ready_endpoints] == want

    await eventually(check, what=f"{model_id} endpoints {want}")


async def test_create_renders_owned_children_and_lists_the_model_without_endpoints(cluster: Cluster) -> None:
    md = await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    uid = md["metadata"]["uid"]
    for kind, name in [
        ("Deployment", LLAMA),
        ("Service", LLAMA),
        ("ConfigMap", f"{LLAMA}-model-repo"),
        ("PodDisruptionBudget", LLAMA),
        ("HorizontalPodAutoscaler", LLAMA),
    ]:
        child = await eventually(lambda kind=kind, name=name: cluster.get(kind, name), what=f"{kind} {name}")
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid, kind

    status = await eventually(lambda: status_of(cluster, LLAMA), what="status")
    assert status["phase"] == "Pending"
    assert status["observedGeneration"] == 1
    # Catalog entry with prices and no endpoint: listed as "pipeline", the gateway answers 503.
    await registry_endpoints(cluster, LLAMA_ID, [])
    record = cluster.record(LLAMA_ID)
    assert record.status == "pipeline" and record.triton_model == "lexora-trtllm-chat"
    assert record.pricing.input_micro_per_mtok == 40_000 and record.context_length == 131072
    live = await cluster.get("ModelDeployment", LLAMA)
    assert "serving.lexora.network/finalizer" in live["metadata"]["finalizers"]


async def test_ready_replica_publishes_the_pod_endpoint(cluster: Cluster) -> None:
    await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    await eventually(lambda: cluster.get("Deployment", LLAMA), what="deployment")
    await cluster.add_node("gpu-1", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, gpus=8)

    await cluster.report_deployment(LLAMA, ready=1)

    status = await until_phase(cluster, LLAMA, "Ready")
    assert status["readyReplicas"] == 1
    endpoint = {
        "name": f"lexora-models/{LLAMA_POD}",
        "grpcAddress": LLAMA_ADDRESS,
        "httpAddress": LLAMA_HTTP_ADDRESS,
        "metricsAddress": LLAMA_METRICS_ADDRESS,
    }
    status = await eventually(
        lambda: _when(status_of(cluster, LLAMA), lambda s: s.get("endpoints")), what="status endpoints"
    )
    assert status["endpoints"] == [{**endpoint, "ready": True}]
    await registry_endpoints(cluster, LLAMA_ID, [LLAMA_ADDRESS])
    record = cluster.record(LLAMA_ID)
    assert record is not None and record.status == "live"
    (published,) = record.endpoints
    assert published.http_address == LLAMA_HTTP_ADDRESS and published.metrics_address == LLAMA_METRICS_ADDRESS
    assert published.deployment == f"lexora-models/{LLAMA}"
    assert [d.key for d in record.deployments] == [f"lexora-models/{LLAMA}"]


async def test_scaling_changes_replicas_and_partial_readiness_is_degraded(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    await eventually(lambda: cluster.get("Deployment", FLUX), what="deployment")

    await cluster.patch("ModelDeployment", FLUX, {"spec": {"replicas": 3}})  # what `kubectl scale md` writes

    async def three() -> bool:
        deployment = await cluster.get("Deployment", FLUX)
        return deployment["spec"]["replicas"] == 3

    await eventually(three, what="Deployment scaled to 3")
    await cluster.report_deployment(FLUX, ready=1, replicas=3)
    status = await until_phase(cluster, FLUX, "Degraded")
    assert ready_condition(status)["message"].startswith("Serving from 1/3 replicas")
    await registry_endpoints(cluster, FLUX_ID, [f"{pod_ip(FLUX, 0)}:8001"])


async def test_spec_change_rolls_out_a_new_pod_template(cluster: Cluster) -> None:
    await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    before = await eventually(lambda: cluster.get("Deployment", LLAMA), what="deployment")
    old_hash = before["spec"]["template"]["metadata"]["annotations"]["serving.lexora.network/config-hash"]

    triton = {"image": "nvcr.io/nvidia/tritonserver:25.02-trtllm-python-py3", "kvCacheFreeGpuMemFraction": 0.8}
    await cluster.patch("ModelDeployment", LLAMA, {"spec": {"triton": triton}})

    async def rolled() -> dict[str, Any] | None:
        deployment = await cluster.get("Deployment", LLAMA)
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        return deployment if image == triton["image"] else None

    after = await eventually(rolled, what="new image in the pod template")
    assert after["spec"]["template"]["metadata"]["annotations"]["serving.lexora.network/config-hash"] != old_hash
    config = await cluster.get("ConfigMap", f"{LLAMA}-model-repo")
    assert 'string_value: "0.8"' in config["data"]["tensorrt_llm.config.pbtxt"]
    status = await eventually(
        lambda: _when(status_of(cluster, LLAMA), lambda s: s.get("observedGeneration") == 2), what="generation 2"
    )
    assert status["observedGeneration"] == 2


async def test_manual_edits_to_children_are_put_back(cluster: Cluster) -> None:
    await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    deployment = await eventually(lambda: cluster.get("Deployment", LLAMA), what="deployment")
    await eventually(lambda: cluster.get("Service", LLAMA), what="service")
    original = deployment["spec"]["template"]["spec"]["containers"][0]

    edited = copy.deepcopy(deployment["spec"]["template"]["spec"]["containers"])
    edited[0]["image"] = "nginx:latest"
    await cluster.patch("Deployment", LLAMA, {"spec": {"template": {"spec": {"containers": edited}}}})
    await cluster.delete("Service", LLAMA)

    async def restored() -> bool:
        live = await cluster.get("Deployment", LLAMA)
        service = await cluster.get("Service", LLAMA)
        return live["spec"]["template"]["spec"]["containers"][0]["image"] == original["image"] and service is not None

    await eventually(restored, timeout=10 * RESYNC_SECONDS + 10, what="drift corrected")


async def test_invalid_spec_fails_once_with_a_clear_condition_and_creates_nothing(cluster: Cluster) -> None:
    manifest = load_sample("flux-1-schnell.yaml")
    manifest["spec"]["backend"] = "tensorrtllm"  # an image model cannot run on TensorRT-LLM
    await cluster.apply(manifest)

    status = await until_phase(cluster, FLUX, "Failed", "InvalidSpec")
    assert "tensorrtllm serves chat models only" in ready_condition(status)["message"]
    assert await cluster.get("Deployment", FLUX) is None
    assert cluster.record(FLUX_ID) is None
    # Not retried: several resyncs later nothing was written again.
    version = (await cluster.get("ModelDeployment", FLUX))["metadata"]["resourceVersion"]
    await asyncio.sleep(3 * RESYNC_SECONDS)
    assert (await cluster.get("ModelDeployment", FLUX))["metadata"]["resourceVersion"] == version


async def test_failing_pods_mark_the_model_failed_and_withdraw_its_endpoint(cluster: Cluster) -> None:
    await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    await eventually(lambda: cluster.get("Deployment", LLAMA), what="deployment")
    await cluster.report_deployment(LLAMA, ready=1)
    await registry_endpoints(cluster, LLAMA_ID, [LLAMA_ADDRESS])

    # The pod is replaced and the new one cannot fetch the model: nothing is ready any more.
    await cluster.add_pod(
        LLAMA,
        f"{LLAMA}-7f9c-x2k",
        {
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "initContainerStatuses": [
                {
                    "name": "fetch-model",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 1,
                            "message": "model source incomplete: engine/config.json is missing",
                        }
                    },
                }
            ],
        },
    )
    await cluster.report_deployment(LLAMA, ready=0, replicas=1)

    status = await until_phase(cluster, LLAMA, "Failed", "ModelSourceIncomplete")
    assert "engine/config.json is missing" in ready_condition(status)["message"]
    assert status["endpoints"] == []
    await registry_endpoints(cluster, LLAMA_ID, [])  # still listed: the gateway answers 503, never hangs


async def test_no_gpu_node_is_reported_as_the_reason_for_pending(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    await cluster.add_node("cpu-1", {"kubernetes.io/os": "linux"}, gpus=0)
    status = await until_phase(cluster, FLUX, "Pending", "NoMatchingGPUNode")
    assert "spec.gpu.product" in ready_condition(status)["message"]


async def test_deleting_withdraws_the_model_and_removes_the_children(cluster: Cluster) -> None:
    await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    await eventually(lambda: cluster.get("Deployment", LLAMA), what="deployment")
    await cluster.report_deployment(LLAMA, ready=1)
    await registry_endpoints(cluster, LLAMA_ID, [LLAMA_ADDRESS])

    await cluster.delete("ModelDeployment", LLAMA)

    async def gone() -> bool:
        return await cluster.get("ModelDeployment", LLAMA) is None

    await eventually(gone, what="finalizer released")
    await eventually(lambda: _sync(cluster.record(LLAMA_ID) is None), what="registry record withdrawn")
    for kind, name in [("Deployment", LLAMA), ("Service", LLAMA), ("ConfigMap", f"{LLAMA}-model-repo")]:
        assert await cluster.get(kind, name) is None, kind


async def test_deleting_releases_the_finalizer_when_another_write_lands_first(cluster: Cluster) -> None:
    await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    await eventually(lambda: cluster.get("Deployment", LLAMA), what="deployment")
    stale: list[str] = []

    async def label_it_first(request: Any) -> bool:
        """Another client labels the object between kopf's read and its finalizer patch."""
        ops = request.data
        if request.name != LLAMA or not any(op["path"].startswith("/metadata/finalizers") for op in ops):
            return False
        await cluster.patch("ModelDeployment", LLAMA, {"metadata": {"labels": {"team": "search"}}})
        stale.extend(op["value"] for op in ops if op["op"] == "test" and op["path"] == "/metadata/resourceVersion")
        return True

    cluster.emulator.before_json_patch = label_it_first
    await cluster.delete("ModelDeployment", LLAMA)

    async def released_after_the_race() -> bool:
        """kopf's finalizer patch tested the version it had read, lost the race, and was sent again."""
        return bool(stale) and await cluster.get("ModelDeployment", LLAMA) is None

    await eventually(released_after_the_race, what="finalizer released after another write")
    await eventually(lambda: _sync(cluster.record(LLAMA_ID) is None), what="registry record withdrawn")


async def _when(value: Any, predicate: Any) -> Any:
    result = await value
    return result if predicate(result) else None


async def _sync(value: bool) -> bool:
    return value


async def test_a_key_removed_from_the_spec_is_removed_from_the_children(cluster: Cluster) -> None:
    """Server-side apply: dropping gpu.product unpins the pods from the GPU model at once."""
    manifest = load_sample("llama-3.2-3b-instruct.yaml")
    manifest["spec"]["engine"] = {"mode": "prebuilt"}  # a build needs gpu.product; a prebuilt engine does not
    await cluster.apply(manifest)

    async def pod_spec() -> dict[str, Any] | None:
        deployment = await cluster.get("Deployment", LLAMA)
        return deployment["spec"]["template"]["spec"] if deployment else None

    pinned = await eventually(pod_spec, what="deployment")
    assert pinned["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}

    await cluster.patch("ModelDeployment", LLAMA, {"spec": {"gpu": {"product": None}}})

    async def unpinned() -> bool:
        spec = await pod_spec()
        return spec is not None and "nodeSelector" not in spec

    await eventually(unpinned, what="nodeSelector removed from the Deployment")
    # Keys the operator never set (another controller's annotation) survive the apply.
    await cluster.patch("Deployment", LLAMA, {"metadata": {"annotations": {"team": "search"}}})
    await cluster.patch("ModelDeployment", LLAMA, {"spec": {"gpu": {"product": "NVIDIA-H200"}}})

    async def repinned() -> dict[str, Any] | None:
        deployment = await cluster.get("Deployment", LLAMA)
        selector = deployment["spec"]["template"]["spec"].get("nodeSelector")
        return deployment if selector == {"nvidia.com/gpu.product": "NVIDIA-H200"} else None

    deployment = await eventually(repinned, what="pinned to H200")
    assert deployment["metadata"]["annotations"]["team"] == "search"


async def test_a_steady_model_is_not_rewritten_by_resyncs(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    await until_phase(cluster, FLUX, "Pending")
    kinds = ("Deployment", "Service", "ConfigMap", "NetworkPolicy")

    async def versions() -> list[str]:
        names = {"ConfigMap": f"{FLUX}-model-repo"}
        return [(await cluster.get(kind, names.get(kind, FLUX)))["metadata"]["resourceVersion"] for kind in kinds]

    before = await versions()
    await asyncio.sleep(3 * RESYNC_SECONDS)
    assert await versions() == before


async def test_phase_changes_are_reported_as_kubernetes_events(cluster: Cluster) -> None:
    md = await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    await until_phase(cluster, LLAMA, "Pending")
    await cluster.report_deployment(LLAMA, ready=1)
    await until_phase(cluster, LLAMA, "Ready")

    async def events() -> list[dict[str, Any]] | None:
        found = [e for e in await cluster.list("Event") if e["involvedObject"]["name"] == LLAMA]
        return found if any(e["reason"] == "Serving" for e in found) else None

    found = sorted(await eventually(events, what="the Serving Event"), key=lambda e: e["metadata"]["name"])
    assert found[0]["message"].startswith("New -> Pending: ")
    assert (found[-1]["type"], found[-1]["reason"]) == ("Normal", "Serving")
    assert found[-1]["message"].startswith("Pending -> Ready: ")
    involved = found[-1]["involvedObject"]
    assert (involved["kind"], involved["uid"]) == ("ModelDeployment", md["metadata"]["uid"])
    # One Event per phase change, not one per pass.
    transitions = [e["message"].split(":", 1)[0] for e in found]
    assert len(transitions) == len(set(transitions)), transitions


async def test_rotating_the_source_credentials_rolls_the_pods(cluster: Cluster) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "huggingface-token"},
        "data": {"HF_TOKEN": "aGZfb2xk", "unrelated": "eA=="},
    }
    await cluster.apply(secret)
    await cluster.apply(load_sample("flux-1-schnell.yaml"))  # tokenSecret: huggingface-token/HF_TOKEN

    async def credentials_hash() -> str | None:
        deployment = await cluster.get("Deployment", FLUX)
        annotations = (deployment or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations")
        return (annotations or {}).get("serving.lexora.network/credentials-hash")

    first = await eventually(credentials_hash, what="credentials hash")
    await cluster.patch("Secret", "huggingface-token", {"data": {"unrelated": "eQ=="}})
    await asyncio.sleep(2 * RESYNC_SECONDS)
    assert await credentials_hash() == first, "a key the fetcher does not read changed nothing"

    await cluster.patch("Secret", "huggingface-token", {"data": {"HF_TOKEN": "aGZfbmV3"}})

    async def rotated() -> bool:
        return await credentials_hash() not in (None, first)

    await eventually(rotated, timeout=5 * RESYNC_SECONDS + 10, what="new credentials hash")


async def test_only_router_pods_may_reach_triton(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    policy = await eventually(lambda: cluster.get("NetworkPolicy", FLUX), what="NetworkPolicy")
    deployment = await cluster.get("Deployment", FLUX)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    serving, metrics = policy["spec"]["ingress"]
    assert [p["port"] for p in serving["ports"]] == ["http", "grpc"]
    (router,) = serving["from"]
    assert router["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "lexora",
        "app.kubernetes.io/component": "router",
    }
    assert [p["port"] for p in metrics["ports"]] == ["metrics"]
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
