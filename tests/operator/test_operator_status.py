"""Phase and conditions from what the Deployment and its pods report: the words a human reads."""

from __future__ import annotations

from typing import Any

from lexora_operator.status import Observation, compute_status, count_matching_gpu_nodes, merge_conditions


def deployment(ready: int, replicas: int, updated: int | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            **status,
        },
    }


def pod(name: str = "llama-abc", *, scheduled: bool = True, ready: bool = False, **status: Any) -> dict[str, Any]:
    conditions = [
        {"type": "PodScheduled", "status": "True" if scheduled else "False", **status.pop("scheduling", {})},
        {"type": "Ready", "status": "True" if ready else "False"},
    ]
    return {"metadata": {"name": name}, "status": {"conditions": conditions, **status}}


def observe(dep: dict[str, Any] | None, desired: int = 1, pods: list[dict[str, Any]] | None = None, **kw: Any):
    return compute_status(Observation("llama", desired, dep, pods or [], gpu_count=kw.pop("gpus", 1), **kw))


def test_all_replicas_ready_is_ready_and_serving() -> None:
    report = observe(deployment(ready=2, replicas=2), desired=2)
    assert (report.phase, report.ready.status, report.ready.message) == ("Ready", "True", "2/2 replicas ready")
    assert report.serving


def test_some_replicas_ready_is_degraded_but_still_serving() -> None:
    crashing = pod(
        "llama-2",
        containerStatuses=[
            {
                "name": "triton",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "E1123 failed to load 'tensorrt_llm'"}},
            }
        ],
    )
    report = observe(deployment(ready=1, replicas=2), desired=2, pods=[crashing])
    assert report.phase == "Degraded" and report.serving
    assert report.ready.reason == "ModelLoadFailed"
    assert "failed to load 'tensorrt_llm'" in report.ready.message


def test_pods_fetching_the_model_are_loading() -> None:
    fetching = pod(initContainerStatuses=[{"name": "fetch-model", "state": {"running": {}}}])
    report = observe(deployment(ready=0, replicas=1), pods=[fetching])
    assert (report.phase, report.ready.reason) == ("Loading", "FetchingModel")
    assert not report.serving


def test_an_image_that_cannot_be_pulled_fails_with_the_image_named() -> None:
    pulling = pod(
        containerStatuses=[
            {
                "name": "triton",
                "image": "nvcr.io/nvidia/tritonserver:99.99",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
            }
        ]
    )
    report = observe(deployment(ready=0, replicas=1), pods=[pulling])
    assert (report.phase, report.ready.reason) == ("Failed", "ImagePullFailed")
    assert "nvcr.io/nvidia/tritonserver:99.99" in report.ready.message


def test_an_unreachable_model_source_fails_with_the_fetcher_message() -> None:
    fetch_failed = pod(
        initContainerStatuses=[
            {
                "name": "fetch-model",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "model source unreachable: cannot download x"}},
            }
        ]
    )
    report = observe(deployment(ready=0, replicas=1), pods=[fetch_failed])
    assert (report.phase, report.ready.reason) == ("Failed", "ModelSourceUnreachable")
    assert report.ready.message.endswith("model source unreachable: cannot download x")


def test_a_missing_token_secret_fails_as_a_config_error() -> None:
    blocked = pod(
        initContainerStatuses=[
            {
                "name": "fetch-model",
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "huggingface-token" not found',
                    }
                },
            }
        ]
    )
    report = observe(deployment(ready=0, replicas=1), pods=[blocked])
    assert (report.phase, report.ready.reason) == ("Failed", "ContainerConfigError")
    assert "huggingface-token" in report.ready.message


def test_no_node_with_the_gpu_is_pending_and_says_so() -> None:
    report = observe(deployment(ready=0, replicas=1), matching_gpu_nodes=0)
    assert (report.phase, report.ready.reason) == ("Pending", "NoMatchingGPUNode")
    assert "spec.gpu.product" in report.ready.message


def test_all_gpus_taken_is_pending_with_the_scheduler_message() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    waiting = pod(scheduled=False, scheduling={"reason": "Unschedulable", "message": message})
    report = observe(deployment(ready=0, replicas=1), pods=[waiting], matching_gpu_nodes=3)
    assert (report.phase, report.ready.reason) == ("Pending", "InsufficientGPU")
    assert message in report.ready.message


def test_oom_while_loading_points_at_the_memory_limit() -> None:
    oom = pod(
        containerStatuses=[
            {
                "name": "triton",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            }
        ]
    )
    report = observe(deployment(ready=0, replicas=1), pods=[oom])
    assert (report.phase, report.ready.reason) == ("Failed", "OutOfMemory")
    assert "spec.resources.limits.memory" in report.ready.message


def test_scaled_to_zero_is_pending_not_failed() -> None:
    report = observe(deployment(ready=0, replicas=0), desired=0)
    assert (report.phase, report.ready.reason) == ("Pending", "ScaledToZero")


def test_progress_deadline_with_nothing_ready_fails() -> None:
    stuck = deployment(
        ready=0,
        replicas=1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "llama-5d4" has timed out progressing.',
            }
        ],
    )
    assert observe(stuck).ready.reason == "ProgressDeadlineExceeded"


def test_a_rollout_in_progress_is_reported_as_progressing() -> None:
    report = observe(deployment(ready=1, replicas=2, updated=1), desired=2)
    assert report.phase == "Degraded"
    assert (report.progressing.status, report.progressing.reason) == ("True", "RollingOut")


def test_invalid_spec_fails_without_looking_at_children() -> None:
    report = compute_status(Observation("llama", 0, None, invalid_spec="spec.replicas: must be >= 0"))
    assert (report.phase, report.ready.reason) == ("Failed", "InvalidSpec")
    assert "spec.replicas" in report.ready.message


def test_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = observe(deployment(ready=1, replicas=1))
    earlier = merge_conditions([], [first.ready], "2026-01-01T00:00:00Z")
    later = merge_conditions(earlier, [observe(deployment(ready=1, replicas=1)).ready], "2026-01-01T01:00:00Z")
    assert later[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = merge_conditions(later, [observe(deployment(ready=0, replicas=1)).ready], "2026-01-01T02:00:00Z")
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T02:00:00Z"


def test_gpu_nodes_count_only_when_labels_match_and_gpus_suffice() -> None:
    def node(product: str, gpus: str, unschedulable: bool = False) -> dict[str, Any]:
        return {
            "metadata": {"labels": {"nvidia.com/gpu.product": product}},
            "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"nvidia.com/gpu": gpus}},
        }

    nodes = [
        node("NVIDIA-H100-80GB-HBM3", "8"),
        node("NVIDIA-L40S", "4"),
        node("NVIDIA-H100-80GB-HBM3", "8", True),
        node("NVIDIA-H100-80GB-HBM3", "1"),
    ]
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert count_matching_gpu_nodes(nodes, selector, "nvidia.com/gpu", 2) == 1
