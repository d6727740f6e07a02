"""The model cache: one ReadWriteMany PVC per ModelDeployment, filled once, read by every replica. Pure.

Like NVIDIA's NIMCache or KServe's LocalModelCache, the model's files are downloaded once per
cluster instead of once per pod: a fill Job runs the fetcher (fetch_script.py, mode `fill`) into
`sources/<source key>/` on the PVC; for TensorRT-LLM an engine build Job (engine_build_script.py)
then writes `engines/<engine key>/`, the key derived from (model, GPU product, tensor-parallel size,
TensorRT-LLM version) and the build settings. Every Triton pod mounts those two directories
read-only (subPath) at the places the per-pod fetch would have filled (/cache/source,
/cache/engine), so the generated config.pbtxt files are the same with or without the cache.

Jobs are named after their key and the PVC's uid and kept after they complete: a succeeded Job
is the record that its directory is complete, so a rollout or a new replica starts nothing. A new
PVC (deleted, recreated) gives new Job names, and the cache is filled again.

Everything here renders dicts or reads observed objects; reconcile.py applies and observes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from lexora_operator import model_repository as repo
from lexora_operator.spec import GROUP, ModelDeploymentSpec

CachePhase = Literal["Pending", "Filling", "Ready", "Failed"]
EnginePhase = Literal["Pending", "Building", "Ready", "Failed"]

CACHE_MOUNT = "/model-cache"  # the whole PVC, in the Jobs
CACHE_CONFIG_DIR = "/etc/lexora/model-cache"  # the cache ConfigMap, in the Jobs
BUILD_SCRIPT_KEY = repo.BUILD_SCRIPT_KEY
ENGINE_DIR = repo.ENGINE_DIR  # the engine, in the Triton pod (cache subPath or built in the pod)
COMPONENT_FILL = "model-cache"
COMPONENT_BUILD = "engine-build"
JOB_LABEL = "app.kubernetes.io/name"
JOB_NAME = "lexora-model-cache"  # never "triton": the Service and PDB must not select the Jobs' pods
CACHE_KEY_ANNOTATION = f"{GROUP}/cache-key"
ENGINE_KEY_ANNOTATION = f"{GROUP}/engine-key"
PROGRESS_LINE = re.compile(r"lexora-cache progress bytes=(\d+)")
# How long a fill may take (a 140 GB checkpoint over a slow link) before the Job is failed.
FILL_DEADLINE_S = 6 * 3600
# Room for what the Jobs and pods write besides the model: /tmp, logs, the writable layer.
SCRATCH = "4Gi"


@dataclass(frozen=True)
class CachePlan:
    """What the cache holds for this spec. `source_key`: the directory under sources/ (None: the
    source is not fetched, a PVC); `engine_key`: under engines/ (None: nothing is built)."""

    claim_name: str
    storage_class: str
    size: str
    source_key: str | None
    engine_key: str | None
    engine_label: str | None  # the four things the engine is built for, for humans


@dataclass(frozen=True)
class JobState:
    phase: str  # Pending | Running | Succeeded | Failed
    message: str = ""
    size_bytes: int | None = None
    progress_bytes: int | None = None
    pod: str | None = None


@dataclass(frozen=True)
class CacheState:
    """status.cache and status.engine, and whether the pods may run."""

    cache: dict[str, Any]
    engine: dict[str, Any] | None
    ready: bool
    failed: bool
    reason: str  # for the Ready condition while not ready
    message: str


def claim_name(name: str) -> str:
    return f"{name}-model-cache"


def config_map_name(name: str) -> str:
    return f"{name}-model-cache"


def _digest(*parts: str, length: int = 16) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def source_fingerprint(spec: ModelDeploymentSpec) -> str:
    source = spec.source
    if source.hugging_face is not None:
        return f"hf:{source.hugging_face.repo}@{source.hugging_face.revision}"
    if source.object_store is not None:
        return f"uri:{source.object_store.uri}"
    if source.image is not None:
        return f"image:{source.image.path}"
    assert source.pvc is not None
    return f"pvc:{source.pvc.claim_name}/{source.pvc.sub_path}"


def fetched(spec: ModelDeploymentSpec) -> bool:
    """Whether the source is downloaded (Hugging Face, object store), i.e. worth caching."""
    return spec.source.kind in ("huggingFace", "objectStore")


def builder_image(spec: ModelDeploymentSpec) -> str:
    return spec.engine.builder_image or spec.triton.image


def trtllm_version(spec: ModelDeploymentSpec) -> str:
    """The TensorRT-LLM version part of the engine key: declared, or the builder image standing for it."""
    return spec.engine.trtllm_version or builder_image(spec)


def max_seq_len(spec: ModelDeploymentSpec) -> int:
    return spec.engine.max_seq_len or spec.context_length


def engine_label(spec: ModelDeploymentSpec) -> str:
    return (
        f"{source_fingerprint(spec)} on {spec.gpu.product or 'any GPU'}, tp={spec.tensor_parallel_size}, "
        f"TensorRT-LLM {trtllm_version(spec)}"
    )


def engine_key(spec: ModelDeploymentSpec) -> str:
    """engines/<key>: the four the issue names, plus every build setting that changes the engine."""
    settings = json.dumps(
        {
            "dtype": spec.engine.dtype,
            "maxBatchSize": spec.max_batch_size,
            "maxSeqLen": max_seq_len(spec),
            "maxNumTokens": spec.engine.max_num_tokens,
        },
        sort_keys=True,
    )
    product = re.sub(r"[^A-Za-z0-9.-]+", "-", spec.gpu.product or "any")[:48]
    digest = _digest(
        source_fingerprint(spec), spec.gpu.product or "", str(spec.tensor_parallel_size), trtllm_version(spec), settings
    )
    return f"{product}-tp{spec.tensor_parallel_size}-{digest}"


def source_key(spec: ModelDeploymentSpec) -> str:
    return _digest(source_fingerprint(spec))


def plan_cache(name: str, spec: ModelDeploymentSpec, default_storage_class: str | None) -> CachePlan | None:
    """The cache for this spec, or None: disabled, no ReadWriteMany storage class known, or nothing
    to keep (a PVC or image source without an engine build)."""
    storage_class = spec.cache.storage_class_name or default_storage_class
    if not spec.cache.enabled or not storage_class:
        return None
    if not fetched(spec) and not spec.builds_engine:
        return None
    return CachePlan(
        claim_name=claim_name(name),
        storage_class=storage_class,
        size=str(spec.cache.size_limit),
        source_key=source_key(spec) if fetched(spec) else None,
        engine_key=engine_key(spec) if spec.builds_engine else None,
        engine_label=engine_label(spec) if spec.builds_engine else None,
    )


def job_labels(name: str, component: str) -> dict[str, str]:
    return {
        JOB_LABEL: JOB_NAME,
        f"{GROUP}/model-deployment": name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "lexora-operator",
    }


def job_selector(name: str) -> dict[str, str]:
    return {JOB_LABEL: JOB_NAME, f"{GROUP}/model-deployment": name}


def cache_files() -> dict[str, str]:
    from lexora_operator.fetch_script import FETCH_SCRIPT

    return {repo.FETCH_SCRIPT_KEY: FETCH_SCRIPT, BUILD_SCRIPT_KEY: build_script()}


def build_script() -> str:
    return resources.files("lexora_operator").joinpath("engine_build_script.py").read_text(encoding="utf-8")


def _job_name(name: str, what: str, key: str, claim_uid: str) -> str:
    # Job names end up in a pod label (job-name), at most 63 characters.
    suffix = f"-{what}-{_digest(key, claim_uid, length=10)}"
    return name[: 63 - len(suffix)].rstrip("-") + suffix


def fill_job_name(name: str, plan: CachePlan, claim_uid: str) -> str:
    assert plan.source_key is not None
    return _job_name(name, "fill", plan.source_key, claim_uid)


def engine_job_name(name: str, plan: CachePlan, claim_uid: str) -> str:
    assert plan.engine_key is not None
    return _job_name(name, "engine", plan.engine_key, claim_uid)


def source_dir_in_job(plan: CachePlan) -> str:
    return f"{CACHE_MOUNT}/sources/{plan.source_key}"


def engine_dir_in_job(plan: CachePlan) -> str:
    return f"{CACHE_MOUNT}/engines/{plan.engine_key}"


def engine_env(spec: ModelDeploymentSpec, source: str, engine_dir: str, key: str) -> list[dict[str, Any]]:
    return [
        {"name": "LEXORA_ENGINE_SOURCE", "value": source},
        {"name": "LEXORA_ENGINE_DIR", "value": engine_dir},
        {"name": "LEXORA_ENGINE_KEY", "value": key},
        {"name": "LEXORA_TP_SIZE", "value": str(spec.tensor_parallel_size)},
        {"name": "LEXORA_TRTLLM_VERSION", "value": spec.engine.trtllm_version or ""},
        {"name": "LEXORA_DTYPE", "value": spec.engine.dtype},
        {"name": "LEXORA_MAX_BATCH_SIZE", "value": str(spec.max_batch_size)},
        {"name": "LEXORA_MAX_SEQ_LEN", "value": str(max_seq_len(spec))},
        {"name": "LEXORA_MAX_NUM_TOKENS", "value": str(spec.engine.max_num_tokens or 0)},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/hf"},
    ]


# --- observation ------------------------------------------------------------------------------------


def job_state(job: dict[str, Any] | None, pods: list[dict[str, Any]], log_tail: str | None = None) -> JobState:
    """A Job and its pods -> phase, the termination message (size or error) and progress."""
    if job is None:
        return JobState("Pending", "Creating the Job")
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    newest = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    pod_name = (newest[-1].get("metadata") or {}).get("name") if newest else None
    message = _termination_message(newest)
    if "Complete" in conditions or int(status.get("succeeded") or 0) > 0:
        size = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            size = int(json.loads(message).get("sizeBytes"))
        return JobState("Succeeded", "", size_bytes=size, pod=pod_name)
    if "Failed" in conditions:
        why = message or str(conditions["Failed"].get("message") or conditions["Failed"].get("reason") or "")
        return JobState("Failed", why.strip().splitlines()[-1] if why.strip() else "the Job failed", pod=pod_name)
    progress = None
    for match in PROGRESS_LINE.finditer(log_tail or ""):
        progress = int(match.group(1))
    waiting = _waiting_reason(newest)
    if waiting:
        return JobState("Pending", waiting, progress_bytes=progress, pod=pod_name)
    if int(status.get("active") or 0) > 0 and any(_running(p) for p in newest):
        return JobState("Running", "", progress_bytes=progress, pod=pod_name)
    return JobState("Pending", "Waiting for the Job's pod to start", progress_bytes=progress, pod=pod_name)


def _termination_message(pods: list[dict[str, Any]]) -> str:
    for pod in reversed(pods):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                return str(terminated["message"]).strip()
    return ""


def _running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def _waiting_reason(pods: list[dict[str, Any]]) -> str:
    if not pods:
        return ""
    pod = pods[-1]
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"The Job's pod cannot be scheduled: {condition.get('message', '')}".strip()
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"):
            return f"{waiting.get('reason')}: {waiting.get('message', '')}".strip()
    return ""


def cache_state(
    plan: CachePlan,
    claim: dict[str, Any] | None,
    fill: JobState | None,
    build: JobState | None,
    *,
    claim_error: str | None = None,
) -> CacheState:
    """status.cache / status.engine from the PVC and the Jobs. `fill`/`build` None: not needed."""
    claim_phase = ((claim or {}).get("status") or {}).get("phase") or "Pending"
    cache: dict[str, Any] = {"claimName": plan.claim_name, "storageClassName": plan.storage_class, "size": plan.size}
    if plan.source_key is not None:
        cache["key"] = plan.source_key
    if claim_error:
        cache.update(phase="Failed", reason="CacheClaimRejected", message=claim_error)
        return CacheState(cache, None, False, True, "CacheClaimRejected", claim_error)
    bound_hint = (
        ""
        if claim_phase == "Bound"
        else (
            f"; the claim is {claim_phase} (its storage class {plan.storage_class} must provide ReadWriteMany volumes)"
        )
    )
    if fill is None:
        cache.update(phase="Ready", message="Nothing to download: the source is read where it is")
    elif fill.phase == "Succeeded":
        cache.update(phase="Ready", message="Filled")
        if fill.size_bytes is not None:
            cache["sizeBytes"] = fill.size_bytes
    elif fill.phase == "Failed":
        cache.update(phase="Failed", reason="CacheFillFailed", message=fill.message)
    elif fill.phase == "Running":
        cache.update(phase="Filling", message="Downloading the model into the cache")
    else:
        cache.update(phase="Pending", message=(fill.message or "Waiting for the fill Job") + bound_hint)
    if fill is not None and fill.progress_bytes is not None and cache["phase"] != "Ready":
        cache["progressBytes"] = fill.progress_bytes
    if fill is not None and fill.pod:
        cache["fillPod"] = fill.pod

    engine: dict[str, Any] | None = None
    if plan.engine_key is not None:
        engine = {"key": plan.engine_key, "builtFor": plan.engine_label}
        if cache["phase"] != "Ready":
            engine.update(phase="Pending", message="Waiting for the model cache")
        elif build is None or build.phase == "Pending":
            engine.update(phase="Pending", message=(build.message if build else "") or "Waiting for the build Job")
        elif build.phase == "Succeeded":
            engine.update(phase="Ready", message="Built")
            if build.size_bytes is not None:
                engine["sizeBytes"] = build.size_bytes
        elif build.phase == "Failed":
            engine.update(phase="Failed", reason="EngineBuildFailed", message=build.message)
        else:
            engine.update(phase="Building", message="Building the TensorRT-LLM engine")
        if build is not None and build.pod:
            engine["buildPod"] = build.pod

    if cache["phase"] == "Failed":
        return CacheState(
            cache, engine, False, True, "CacheFillFailed", f"Filling the model cache failed: {cache['message']}"
        )
    if cache["phase"] != "Ready":
        progress = f" ({cache['progressBytes']} bytes so far)" if "progressBytes" in cache else ""
        reason = "FillingCache" if cache["phase"] == "Filling" else "WaitingForCache"
        return CacheState(cache, engine, False, False, reason, f"{cache['message']}{progress}")
    if engine is not None and engine["phase"] == "Failed":
        return CacheState(cache, engine, False, True, "EngineBuildFailed", engine["message"])
    if engine is not None and engine["phase"] != "Ready":
        reason = "BuildingEngine" if engine["phase"] == "Building" else "WaitingForEngineBuild"
        return CacheState(cache, engine, False, False, reason, f"{engine['message']} ({plan.engine_label})")
    return CacheState(cache, engine, True, False, "CacheReady", "The model cache is ready")


def source_key_of_deployment(deployment: dict[str, Any] | None) -> str | None:
    """The sources/ directory a live Deployment's pods read (kept by the next fill)."""
    if not deployment:
        return None
    for volume_mount in _triton_mounts(deployment):
        sub = volume_mount.get("subPath") or ""
        if volume_mount.get("name") == "model-cache" and sub.startswith("sources/"):
            return sub.removeprefix("sources/")
    return None


def _triton_mounts(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    mounts: list[dict[str, Any]] = []
    for container in pod.get("containers") or []:
        mounts += container.get("volumeMounts") or []
    return mounts
