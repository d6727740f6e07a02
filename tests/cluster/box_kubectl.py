"""What a platform engineer does to the cluster in a box, over the API emulator's HTTP API, as
`kubectl` would: apply, patch, scale and delete ModelDeployments, delete a pod, wait for Ready.
Shared by the box's test modules (test modules never import each other)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from cluster_box import NAMESPACE, Box, PodState

MD_API = "serving.lexora.network/v1alpha1"
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def sample(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text()))


def eventually(check: Callable[[], Any], box: Box, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert not box.cluster.errors, "\n".join(box.cluster.errors)
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: last value {last!r}")


class Kubectl:
    """What a platform engineer does, over the API emulator's HTTP API."""

    def __init__(self, box: Box):
        self.box = box
        self.api = box.cluster.api

    def apply(self, manifest: dict[str, Any]) -> httpx.Response:
        return self.api.create(MD_API, "modeldeployments", NAMESPACE, manifest)

    def patch(self, name: str, patch: dict[str, Any]) -> httpx.Response:
        return self.api.patch(MD_API, "modeldeployments", NAMESPACE, name, patch)

    def scale(self, name: str, replicas: int) -> httpx.Response:
        """`kubectl scale modeldeployment/<name> --replicas=N`: the scale subresource writes
        spec.replicas (the CRD's specReplicasPath), admitted by the CRD's rules as any spec change."""
        return self.patch(name, {"spec": {"replicas": replicas}})

    def delete(self, name: str) -> None:
        self.api.delete(MD_API, "modeldeployments", NAMESPACE, name).raise_for_status()

    def delete_pod(self, name: str, grace: float) -> None:
        """`kubectl delete pod <name> --grace-period=<grace>`."""
        self.box.cluster.delete_pod(name, grace)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.api.get(MD_API, "modeldeployments", NAMESPACE, name)

    def deployment(self, name: str) -> dict[str, Any] | None:
        return self.api.get("apps/v1", "deployments", NAMESPACE, name)

    def pods(self, owner: str) -> list[PodState]:
        """The box's pods of a ModelDeployment's Deployment that are not terminating, by name."""
        pods = [s for s in list(self.box.cluster.pods.values()) if s.owner == owner and not s.terminating]
        return sorted(pods, key=lambda s: s.name)

    def wait_ready(self, name: str, timeout: float = 150) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            md = self.get(name)
            status = (md or {}).get("status") or {}
            generation = (md or {}).get("metadata", {}).get("generation")
            current = status.get("observedGeneration") == generation
            return md if status.get("phase") == "Ready" and current else None

        try:
            return eventually(ready, self.box, timeout, f"{name} Ready")  # type: ignore[no-any-return]
        except AssertionError as error:
            raise AssertionError(
                f"{error}\nstatus: {(self.get(name) or {}).get('status')}\n{self.pod_logs()}"
            ) from None

    def pod_logs(self) -> str:
        return "\n".join(
            f"--- {state.name}/{c}:\n{state.pod.logs(c)}"
            for state in list(self.box.cluster.pods.values())
            for c in ("fetch-model", "triton")
        )
