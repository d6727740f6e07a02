"""What the children report -> the ModelDeployment's phase, conditions and endpoints. Pure.

Phases: Pending (nothing can run yet, or scaled to zero), Loading (pods fetch or load the model),
Ready (every desired replica ready), Degraded (serving, but fewer replicas than desired), Failed (will
not serve without a human: an invalid spec, an image that cannot be pulled, a model source that
cannot be fetched, a model that crashes while loading). The Ready condition carries the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["Pending", "Loading", "Ready", "Degraded", "Failed"]

_PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG_ERRORS = {"CreateContainerConfigError", "CreateContainerError"}


@dataclass(frozen=True)
class Condition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str

    def as_dict(self, now: str, previous: dict[str, Any] | None) -> dict[str, Any]:
        changed = previous is None or previous.get("status") != self.status
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),  # type: ignore[union-attr]
        }


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    message: str
    fatal: bool  # will not clear up without a human


@dataclass(frozen=True)
class CacheView:
    """The model cache as the phase sees it (cache.CacheState, without the status dicts)."""

    ready: bool
    failed: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from, gathered by the reconciler."""

    name: str
    desired_replicas: int
    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    gpu_count: int = 0
    matching_gpu_nodes: int | None = None  # None: not checked
    invalid_spec: str | None = None
    scales_from_zero: bool = False  # autoscaled with minReplicas 0: a request wakes it
    cache: CacheView | None = None  # None: no model cache


@dataclass(frozen=True)
class StatusReport:
    phase: Phase
    ready_replicas: int
    replicas: int
    ready: Condition
    progressing: Condition

    @property
    def serving(self) -> bool:
        return self.ready_replicas > 0 and self.phase in ("Ready", "Degraded")


def compute_status(obs: Observation) -> StatusReport:
    report = _compute(obs)
    cache = obs.cache
    if cache is None or cache.ready or obs.invalid_spec is not None:
        return report
    # The model cache is not ready for this spec: nothing new runs until it is.
    progressing = Condition("Progressing", "True", cache.reason, f"Waiting for the model cache: {cache.message}")
    if report.ready_replicas >= 1:
        message = f"Serving the previous spec from {report.ready_replicas} replica(s); {cache.message}"
        return StatusReport(
            "Degraded",
            report.ready_replicas,
            report.replicas,
            Condition("Ready", "True", cache.reason, message),
            progressing,
        )
    if cache.failed:
        phase: Phase = "Failed"
    elif cache.reason in ("FillingCache", "BuildingEngine"):
        phase = "Loading"
    else:
        phase = "Pending"
    return StatusReport(
        phase, 0, report.replicas, Condition("Ready", "False", cache.reason, cache.message), progressing
    )


def _compute(obs: Observation) -> StatusReport:
    if obs.invalid_spec is not None:
        return _not_serving(obs, "Failed", "InvalidSpec", f"The spec cannot work as written: {obs.invalid_spec}")
    if obs.deployment is None:
        return _not_serving(obs, "Pending", "Creating", "Creating the Triton Deployment")

    status = obs.deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    current = int(status.get("replicas") or 0)
    desired = obs.desired_replicas
    progressing = _progressing(obs.deployment, desired, updated, current)
    problems = sorted(
        (d for d in (diagnose_pod(p, obs.gpu_count) for p in obs.pods if not pod_ready(p)) if d is not None),
        key=lambda d: not d.fatal,
    )

    if desired == 0 and ready == 0:
        if obs.scales_from_zero:
            message = "Scaled to zero: a request for the model is held while it wakes to one replica"
        else:
            message = "Scaled to zero: the model stays in the catalog and requests get 503 until it scales up"
        return StatusReport("Pending", 0, current, Condition("Ready", "False", "ScaledToZero", message), progressing)
    if ready >= 1:
        if ready >= desired and updated >= desired and progressing.status == "False":
            condition = Condition("Ready", "True", "Serving", f"{ready}/{desired} replicas ready")
            return StatusReport("Ready", ready, current, condition, progressing)
        detail = f"; {problems[0].message}" if problems else ""
        message = f"Serving from {ready}/{desired} replicas{detail}"
        reason = problems[0].reason if problems else ("RollingOut" if progressing.status == "True" else "Partial")
        return StatusReport("Degraded", ready, current, Condition("Ready", "True", reason, message), progressing)

    fatal = [d for d in problems if d.fatal]
    if fatal:
        return _report(obs, "Failed", fatal[0].reason, fatal[0].message, current, progressing)
    deadline = _deployment_condition(obs.deployment, "Progressing")
    if deadline and deadline.get("reason") == "ProgressDeadlineExceeded":
        message = f"No replica became ready in time: {deadline.get('message', '')}".strip()
        return _report(obs, "Failed", "ProgressDeadlineExceeded", message, current, progressing)
    if obs.gpu_count and obs.matching_gpu_nodes == 0:
        message = (
            f"No node matches the GPU selector with {obs.gpu_count} allocatable GPU(s); pods stay Pending until "
            "such a node joins (check spec.gpu.product, spec.nodeSelector and the GPU operator)"
        )
        return _report(obs, "Pending", "NoMatchingGPUNode", message, current, progressing)
    if problems:
        return _report(obs, "Pending", problems[0].reason, problems[0].message, current, progressing)
    failure = _deployment_condition(obs.deployment, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        message = f"Pods cannot be created: {failure.get('message', '')}".strip()
        return _report(obs, "Pending", failure.get("reason") or "ReplicaFailure", message, current, progressing)
    started = [p for p in obs.pods if _scheduled(p)]
    if started:
        fetching = any(_init_running(p) for p in started)
        reason, what = ("FetchingModel", "fetching the model") if fetching else ("LoadingModel", "loading the model")
        message = f"{len(started)} pod(s) {what}; the startup probe allows for the load"
        return _report(obs, "Loading", reason, message, current, progressing)
    return _report(
        obs, "Pending", "WaitingForPods", "Waiting for pods to be created and scheduled", current, progressing
    )


def _report(
    obs: Observation, phase: Phase, reason: str, message: str, current: int, progressing: Condition
) -> StatusReport:
    return StatusReport(phase, 0, current, Condition("Ready", "False", reason, message), progressing)


def _not_serving(obs: Observation, phase: Phase, reason: str, message: str) -> StatusReport:
    idle = Condition("Progressing", "False", reason, "Nothing to roll out")
    return StatusReport(phase, 0, 0, Condition("Ready", "False", reason, message), idle)


def _progressing(deployment: dict[str, Any], desired: int, updated: int, current: int) -> Condition:
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = (deployment.get("status") or {}).get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return Condition("Progressing", "True", "RollingOut", "The Deployment has not picked up the change yet")
    if updated < desired or current > desired:
        return Condition("Progressing", "True", "RollingOut", f"{updated}/{desired} replicas run the current spec")
    return Condition("Progressing", "False", "RolloutComplete", "Every replica runs the current spec")


def _deployment_condition(deployment: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in _pod_conditions(pod))


def _pod_conditions(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get("conditions") or [])


def _scheduled(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "PodScheduled" and c.get("status") == "True" for c in _pod_conditions(pod))


def _init_running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    return any("running" in (s.get("state") or {}) or "waiting" in (s.get("state") or {}) for s in statuses)


def diagnose_pod(pod: dict[str, Any], gpu_count: int = 0) -> Diagnosis | None:
    """The one thing a human should know about a pod that is not ready, or None if it is just busy."""
    name = (pod.get("metadata") or {}).get("name", "?")
    for condition in _pod_conditions(pod):
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _unschedulable(name, str(condition.get("message", "")), gpu_count)
    status = pod.get("status") or {}
    for init, statuses in ((True, status.get("initContainerStatuses")), (False, status.get("containerStatuses"))):
        for container in statuses or []:
            found = _diagnose_container(name, container, init)
            if found is not None:
                return found
    return None


def _unschedulable(pod: str, message: str, gpu_count: int) -> Diagnosis:
    if gpu_count and "Insufficient nvidia.com/gpu" in message:
        reason = "InsufficientGPU"
        hint = "every matching GPU is taken; free one, lower replicas or add GPU nodes"
    elif "node affinity/selector" in message or "didn't match" in message:
        reason = "NoMatchingGPUNode" if gpu_count else "NoMatchingNode"
        hint = "no node has the labels spec.gpu.product / spec.nodeSelector ask for"
    else:
        reason, hint = "Unschedulable", "see the scheduler's message"
    return Diagnosis(reason, f"Pod {pod} cannot be scheduled ({hint}): {message}".strip(), fatal=False)


def _diagnose_container(pod: str, container: dict[str, Any], init: bool) -> Diagnosis | None:
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason")
    image = container.get("image", "")
    what = "model fetcher" if init else "Triton"
    if reason in _PULL_ERRORS:
        message = f"Cannot pull the {what} image {image}: {waiting.get('message', reason)}"
        return Diagnosis("ImagePullFailed", message, fatal=True)
    if reason in _CONFIG_ERRORS:
        message = f"Cannot start the {what} container: {waiting.get('message', reason)}"
        return Diagnosis("ContainerConfigError", message, fatal=True)
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    failed = terminated and terminated.get("exitCode", 0) != 0
    if not failed:
        return None
    detail = str(terminated.get("message") or terminated.get("reason") or "").strip()
    last_line = detail.splitlines()[-1] if detail else f"exit code {terminated.get('exitCode')}"
    if init:
        incomplete = "model source incomplete" in detail
        reason = "ModelSourceIncomplete" if incomplete else "ModelSourceUnreachable"
        return Diagnosis(reason, f"Fetching the model failed in pod {pod}: {last_line}", fatal=True)
    if terminated.get("reason") == "OOMKilled":
        message = f"Triton in pod {pod} ran out of memory while loading; raise spec.resources.limits.memory"
        return Diagnosis("OutOfMemory", message, fatal=True)
    return Diagnosis("ModelLoadFailed", f"Triton exited in pod {pod} ({what} crash-looping): {last_line}", fatal=True)


def count_matching_gpu_nodes(
    nodes: Iterable[dict[str, Any]], node_selector: dict[str, str], resource_name: str, gpus: int
) -> int:
    """Schedulable nodes whose labels match the selector and that have enough allocatable GPUs."""
    count = 0
    for node in nodes:
        node_labels = (node.get("metadata") or {}).get("labels") or {}
        if any(node_labels.get(key) != value for key, value in node_selector.items()):
            continue
        if (node.get("spec") or {}).get("unschedulable"):
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        try:
            if int(str(allocatable.get(resource_name, "0"))) >= gpus:
                count += 1
        except ValueError:
            continue
    return count


def merge_conditions(previous: list[dict[str, Any]], current: Iterable[Condition], now: str) -> list[dict[str, Any]]:
    """New condition dicts, keeping lastTransitionTime where the status did not change."""
    by_type = {c.get("type"): c for c in previous}
    return [condition.as_dict(now, by_type.get(condition.type)) for condition in current]
