"""The model cache, with the running operator against the kmock API emulator: the operator is
configured with a ReadWriteMany storage class (the chart's operator.modelCache.storageClassName), the
tests play the Job controller and the kubelet (Job pods, their logs and termination messages)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from operator_support import Cluster, eventually, load_sample

FLUX = "flux-1-schnell"
LLAMA = "llama-3-2-3b-instruct"
STORAGE_CLASS = "rwx-nfs"


@pytest.fixture
def operator_overrides() -> dict[str, Any]:
    return {"cache_storage_class": STORAGE_CLASS}


async def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    md = await cluster.get("ModelDeployment", name)
    return dict((md or {}).get("status") or {})


async def until(cluster: Cluster, name: str, what: str, check: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = await status_of(cluster, name)
        return status if status and check(status) else None

    return await eventually(probe, what=what)


def reason(status: dict[str, Any]) -> str:
    return next(c for c in status["conditions"] if c["type"] == "Ready")["reason"]


async def jobs(cluster: Cluster, component: str) -> list[dict[str, Any]]:
    return [j for j in await cluster.list("Job") if j["metadata"]["labels"]["app.kubernetes.io/component"] == component]


async def the_job(cluster: Cluster, component: str) -> dict[str, Any]:
    async def one() -> dict[str, Any] | None:
        found = await jobs(cluster, component)
        return found[0] if len(found) == 1 else None

    return await eventually(one, what=f"one {component} Job")


def triton_pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


async def test_weights_are_fetched_once_into_the_cache_before_any_pod_starts(cluster: Cluster) -> None:
    md = await cluster.apply(load_sample("flux-1-schnell.yaml"))
    claim = await eventually(lambda: cluster.get("PersistentVolumeClaim", f"{FLUX}-model-cache"), what="claim")
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": STORAGE_CLASS,
        "resources": {"requests": {"storage": "80Gi"}},
    }
    assert claim["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
    fill = await the_job(cluster, "model-cache")
    container = fill["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["LEXORA_FETCH_MODE"]["value"] == "fill"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "huggingface-token", "key": "HF_TOKEN"}
    assert container["command"] == ["/bin/sh", "/etc/lexora/model-cache/fetch.sh"]

    status = await until(cluster, FLUX, "waiting for the cache", lambda s: s.get("cache", {}).get("phase") == "Pending")
    assert status["phase"] == "Pending" and reason(status) == "WaitingForCache"
    assert await cluster.get("Deployment", FLUX) is None, "no pod starts before the cache holds the model"

    name = fill["metadata"]["name"]
    await cluster.run_job(
        name, phase="Running", log="lexora-cache progress bytes=1024\nlexora-cache progress bytes=5368709120\n"
    )
    status = await until(cluster, FLUX, "filling", lambda s: s.get("cache", {}).get("progressBytes") == 5368709120)
    assert status["cache"]["phase"] == "Filling"
    assert status["phase"] == "Loading" and reason(status) == "FillingCache"

    await cluster.run_job(name, phase="Succeeded", message=json.dumps({"sizeBytes": 33_000_000_000, "files": 27}))
    status = await until(cluster, FLUX, "cache ready", lambda s: s.get("cache", {}).get("phase") == "Ready")
    assert status["cache"]["sizeBytes"] == 33_000_000_000
    deployment = await eventually(lambda: cluster.get("Deployment", FLUX), what="deployment")
    pod = triton_pod(deployment)
    cache_volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert cache_volume["persistentVolumeClaim"] == {"claimName": f"{FLUX}-model-cache", "readOnly": True}
    for container in (pod["initContainers"][0], pod["containers"][0]):
        mount = next(m for m in container["volumeMounts"] if m["name"] == "model-cache")
        assert mount["readOnly"] is True and mount["mountPath"] == "/cache/source"
        assert mount["subPath"] == f"sources/{status['cache']['key']}"
    init_env = {e["name"]: e.get("value") for e in pod["initContainers"][0]["env"]}
    assert init_env["LEXORA_FETCH_MODE"] == "cached", "a pod reads the cache, it downloads nothing"
    # Nothing big on the node's disk any more: the cache emptyDir only holds HF_HOME.
    assert next(v for v in pod["volumes"] if v["name"] == "cache")["emptyDir"] == {"sizeLimit": "1Gi"}

    await cluster.report_deployment(FLUX, ready=1)
    status = await until(cluster, FLUX, "ready", lambda s: s.get("phase") == "Ready")
    assert reason(status) == "Serving"


async def test_a_new_replica_and_a_rollout_reuse_the_filled_cache(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    fill = await the_job(cluster, "model-cache")
    await cluster.run_job(fill["metadata"]["name"], phase="Succeeded", message='{"sizeBytes": 10}')
    await eventually(lambda: cluster.get("Deployment", FLUX), what="deployment")

    await cluster.patch(
        "ModelDeployment", FLUX, {"spec": {"replicas": 3, "triton": {"parameters": {"num_threads": "8"}}}}
    )

    async def scaled() -> bool:
        deployment = await cluster.get("Deployment", FLUX)
        return deployment is not None and deployment["spec"]["replicas"] == 3

    await eventually(scaled, what="three replicas")
    assert [j["metadata"]["name"] for j in await jobs(cluster, "model-cache")] == [fill["metadata"]["name"]]


async def test_a_new_source_is_filled_while_the_old_pods_keep_serving(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    first = await the_job(cluster, "model-cache")
    await cluster.run_job(first["metadata"]["name"], phase="Succeeded", message='{"sizeBytes": 10}')
    await eventually(lambda: cluster.get("Deployment", FLUX), what="deployment")
    await cluster.report_deployment(FLUX, ready=1)
    ready = await until(cluster, FLUX, "ready", lambda s: s.get("phase") == "Ready")
    old_template = (await cluster.get("Deployment", FLUX))["spec"]["template"]

    await cluster.patch("ModelDeployment", FLUX, {"spec": {"source": {"huggingFace": {"revision": "v2"}}}})

    async def second_job() -> dict[str, Any] | None:
        found = [j for j in await jobs(cluster, "model-cache") if j["metadata"]["name"] != first["metadata"]["name"]]
        return found[0] if found else None

    second = await eventually(second_job, what="a fill Job for the new revision")
    env = {e["name"]: e.get("value") for e in second["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LEXORA_CACHE_KEEP"] == ready["cache"]["key"], "the fill keeps what the serving pods read"
    status = await until(
        cluster, FLUX, "degraded while filling", lambda s: s.get("cache", {}).get("phase") == "Pending"
    )
    assert status["phase"] == "Degraded" and reason(status) == "WaitingForCache"
    assert (await cluster.get("Deployment", FLUX))["spec"]["template"] == old_template

    await cluster.run_job(second["metadata"]["name"], phase="Succeeded", message='{"sizeBytes": 11}')

    async def rolled() -> bool:
        deployment = await cluster.get("Deployment", FLUX)
        mounts = triton_pod(deployment)["containers"][0]["volumeMounts"]
        return any(m.get("subPath") == f"sources/{env['LEXORA_SOURCE_DIR'].rsplit('/', 1)[-1]}" for m in mounts)

    await eventually(rolled, timeout=30, what="the Deployment on the new cache directory")

    async def only_the_new_job() -> bool:
        return [j["metadata"]["name"] for j in await jobs(cluster, "model-cache")] == [second["metadata"]["name"]]

    await eventually(only_the_new_job, timeout=30, what="the superseded fill Job removed")


async def test_a_failed_fill_fails_the_model_with_the_fetchers_reason(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    fill = await the_job(cluster, "model-cache")
    why = "model source unreachable: cannot download black-forest-labs/FLUX.1-schnell@main from Hugging Face"
    await cluster.run_job(fill["metadata"]["name"], phase="Failed", message=why)
    status = await until(cluster, FLUX, "failed", lambda s: s.get("phase") == "Failed")
    assert reason(status) == "CacheFillFailed"
    assert status["cache"]["phase"] == "Failed" and status["cache"]["message"] == why
    assert why in next(c for c in status["conditions"] if c["type"] == "Ready")["message"]


async def test_the_engine_is_built_once_per_key_after_the_fill(cluster: Cluster) -> None:
    await cluster.apply(load_sample("llama-3.2-3b-instruct.yaml"))
    fill = await the_job(cluster, "model-cache")
    assert await jobs(cluster, "engine-build") == [], "the build waits for the weights"
    await cluster.run_job(fill["metadata"]["name"], phase="Succeeded", message='{"sizeBytes": 6400000000}')

    build = await the_job(cluster, "engine-build")
    pod = build["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/lexora/triton-trtllm:0.1.0"  # our runtime carries tensorrt_llm
    assert container["command"] == ["python3", "/etc/lexora/model-cache/build_engine.py"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LEXORA_TP_SIZE"] == "1" and env["LEXORA_TRTLLM_VERSION"] == "0.19.0"
    assert env["LEXORA_ENGINE_DIR"].startswith("/model-cache/engines/NVIDIA-H100-80GB-HBM3-tp1-")

    status = await until(cluster, LLAMA, "building", lambda s: (s.get("engine") or {}).get("phase") == "Pending")
    assert status["engine"]["builtFor"].endswith("NVIDIA-H100-80GB-HBM3, tp=1, TensorRT-LLM 0.19.0")
    await cluster.run_job(build["metadata"]["name"], phase="Running")
    status = await until(cluster, LLAMA, "building", lambda s: (s.get("engine") or {}).get("phase") == "Building")
    assert status["phase"] == "Loading" and reason(status) == "BuildingEngine"
    assert await cluster.get("Deployment", LLAMA) is None

    await cluster.run_job(build["metadata"]["name"], phase="Succeeded", message='{"sizeBytes": 6500000000}')
    deployment = await eventually(lambda: cluster.get("Deployment", LLAMA), what="deployment")
    mounts = {m["mountPath"]: m for m in triton_pod(deployment)["containers"][0]["volumeMounts"]}
    assert mounts["/cache/engine"]["subPath"] == env["LEXORA_ENGINE_DIR"].removeprefix("/model-cache/")
    assert mounts["/cache/engine"]["readOnly"] is True
    assert [c["name"] for c in triton_pod(deployment)["initContainers"]] == ["fetch-model"], "nothing built in the pod"
    status = await until(cluster, LLAMA, "engine ready", lambda s: (s.get("engine") or {}).get("phase") == "Ready")
    assert status["engine"]["sizeBytes"] == 6500000000

    # Another GPU product is another key: a new build; the old engine stays until it is ready.
    await cluster.patch("ModelDeployment", LLAMA, {"spec": {"gpu": {"product": "NVIDIA-L40S"}}})

    async def second_build() -> list[dict[str, Any]]:
        return [b for b in await jobs(cluster, "engine-build") if b["metadata"]["name"] != build["metadata"]["name"]]

    rebuilt = (await eventually(second_build, what="a build for the L40S"))[0]
    assert rebuilt["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert len(await jobs(cluster, "model-cache")) == 1, "the weights are not fetched again"


async def test_without_a_cache_each_pod_fetches_into_a_disk_the_scheduler_sees(cluster: Cluster) -> None:
    manifest = copy.deepcopy(load_sample("flux-1-schnell.yaml"))
    manifest["spec"]["cache"]["enabled"] = False
    await cluster.apply(manifest)
    deployment = await eventually(lambda: cluster.get("Deployment", FLUX), what="deployment")
    pod = triton_pod(deployment)
    assert next(v for v in pod["volumes"] if v["name"] == "cache")["emptyDir"] == {"sizeLimit": "80Gi"}
    for container in (pod["initContainers"][0], pod["containers"][0]):
        assert container["resources"]["requests"]["ephemeral-storage"] == "82Gi", container["name"]
        assert container["resources"]["limits"]["ephemeral-storage"] == "86Gi", container["name"]
    assert await cluster.list("PersistentVolumeClaim") == [] and await cluster.list("Job") == []
    status = await until(cluster, FLUX, "status", lambda s: "cache" in s)
    assert status["cache"]["phase"] == "Disabled" and "spec.cache.enabled is false" in status["cache"]["message"]
