"""What the operator tests share: the repository's paths and samples, the kmock API emulator, a
client that plays the platform engineer and the kubelet over it, and `eventually`.

The emulator stands in for kube-apiserver: it stores objects, serves list/watch, merge and JSON
patches (a JSON patch whose resourceVersion test is stale gets 422), server-side apply (PATCH with
application/apply-patch+yaml: a field the manager applied before and no longer applies is removed,
lists are replaced whole rather than merged by key, `force` is implied; an apply that changes
nothing writes nothing, as kube-apiserver's) and finalizers. It has no controllers, so the tests
play the kubelet and the Deployment controller by patching Deployment status and creating pods.

Test modules import these from here, never from conftest: every test folder's conftest.py is the
same top-level module `conftest`, so what `from conftest import` finds depends on which folders the
session collects, and in which order.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from crd_admission import CrdSchema
from crd_admission import invalid as invalid_status
from kmock._internal import dicts as kmock_dicts
from typing_extensions import override

from lexora_contracts.registry import ModelRecord
from lexora_runtime.model_registry import ModelRegistryView

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "manifests" / "samples"
CRD_PATH = REPO_ROOT / "manifests" / "crds" / "modeldeployments.serving.lexora.network.yaml"
NAMESPACE = "lexora-models"
RESYNC_SECONDS = 1.0

RESOURCES = {
    "serving.lexora.network/v1alpha1/modeldeployments": ("ModelDeployment", True, {"status", "scale"}),
    "apps/v1/deployments": ("Deployment", True, {"status", "scale"}),
    "v1/pods": ("Pod", True, {"status"}),
    "v1/services": ("Service", True, set()),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", True, set()),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/nodes": ("Node", False, {"status"}),
    "v1/events": ("Event", True, set()),
    "v1/secrets": ("Secret", True, set()),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True, set()),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", True, {"status"}),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True, {"status"}),
    "batch/v1/jobs": ("Job", True, {"status"}),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True, {"status"}),
    # kopf waits for these two to be discoverable before it starts watching anything.
    "v1/namespaces": ("Namespace", False, {"status"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, {"status"}),
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


APPLY_PATCH = "application/apply-patch+yaml"


class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock plus the bookkeeping kube-apiserver does: uid, resourceVersion, generation, namespace,
    and server-side apply."""

    _versions = itertools.count(1)
    # Another client's write, run once just before the next JSON patch that it accepts (returns
    # True for): the race that kopf's resourceVersion test guards a finalizer patch against.
    before_json_patch: Callable[[kmock.Request], Awaitable[bool]] | None = None
    # What each field manager last applied to each object, by (resource, namespace, name, manager).
    applied: dict[tuple[Any, ...], dict[str, Any]] | None = None
    # Custom resources admitted as kube-apiserver admits them (crd_admission: pruning, schema
    # defaults, schema and CEL validation, 422 on failure), by (group, plural). Off unless set: the
    # operator's own tests also create specs the CRD would refuse, to see the operator refuse them.
    crds: dict[tuple[str, str], CrdSchema] | None = None
    # The kubelet's side of `GET pods/<name>/log`, by (namespace, pod name).
    pod_logs: dict[tuple[str, str], str] | None = None

    @override
    async def _handle(self, request: kmock.Request) -> Any:
        if request.method == "GET" and request.subresource == "log" and request.name is not None:
            text = (self.pod_logs or {}).get((request.namespace or "", request.name))
            if text is None:
                raise kmock.KubernetesError(status=404, reason="NotFound", message="no log")
            return aiohttp.web.Response(text=text, content_type="text/plain")
        if request.method == "PATCH" and request.headers.get("Content-Type", "").startswith(APPLY_PATCH):
            applied = self._server_side_apply(request)
            if not isinstance(applied, kmock.Request):
                return aiohttp.web.json_response(applied)  # nothing changed: no write, no event
            # kmock matches its reactions to the requests it has seen, by identity.
            self._requests[next(i for i, seen in enumerate(self._requests) if seen is request)] = applied
            request = applied
        self._admit(request)
        if isinstance(request.data, list) and self.before_json_patch and await self.before_json_patch(request):
            self.before_json_patch = None
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                meta = request.data.setdefault("metadata", {})
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta["generation"] = 1
                meta["resourceVersion"] = str(next(self._versions))
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._bump(request)
        elif request.action == kmock.action.UPDATE and isinstance(request.data, list):
            # A JSON patch is a write as well: it gets the next resourceVersion, after its own tests.
            version = {"op": "add", "path": "/metadata/resourceVersion", "value": str(next(self._versions))}
            request.data.append(version)
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as error:
            # kube-apiserver answers a failed JSON-patch test with 422, and kopf, seeing it, patches
            # again on its next cycle from the fresh object; a 500 would make it resend the stale one.
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(error), details={}) from error

    def _admit(self, request: kmock.Request) -> None:
        """Default and validate a write of a custom resource in place, or refuse it with 422."""
        resource = request.resource
        schema = None if resource is None or not self.crds else self.crds.get((resource.group, resource.plural))
        if schema is None or request.subresource is not None or request.data is None:
            return
        old = None
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            new = request.data
        elif request.action == kmock.action.UPDATE and request.name is not None:
            key = (resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return  # the emulator answers 404
            old = copy.deepcopy(self.objects[key].raw)
            if isinstance(request.data, list):
                try:
                    new = jsonpatch.apply_patch(old, request.data)
                except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict):
                    return  # the emulator answers 422 for the stale test
            else:
                new = kmock_dicts.patch_dict(copy.deepcopy(old), request.data)
        else:
            return
        admitted, causes = schema.admit(new, old)
        if causes:
            body = invalid_status(schema.kind, str(new.get("metadata", {}).get("name")), schema.group, causes)
            raise kmock.KubernetesError(status=422, reason="Invalid", message=body["message"], details=body["details"])
        if isinstance(request.data, dict):
            stored = admitted if old is None else _merge_diff(old, admitted)
            request.data.clear()
            request.data.update(stored)

    def _server_side_apply(self, request: kmock.Request) -> kmock.Request | dict[str, Any]:
        """The apply as a create or a merge patch, or the unchanged object when it changes nothing."""
        manager = request.params.get("fieldManager")
        if not manager or not isinstance(request.data, dict) or request.name is None:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="apply needs a fieldManager")
        config = copy.deepcopy(request.data)
        key = (request.resource, request.namespace, request.name)
        stored = self.objects[key] if key in self.objects else None  # noqa: SIM401 - ObjectsArray has no get()
        live = None if stored is None or stored.deleted else copy.deepcopy(stored.raw)
        if self.applied is None:
            self.applied = {}
        previous = self.applied.get((*key, manager), {})
        self.applied[(*key, manager)] = copy.deepcopy(config)
        if live is None:
            return attrs.evolve(request, action=kmock.action.CREATE, data=config)
        wanted = copy.deepcopy(live)
        _drop_unapplied(wanted, previous, config)
        _merge_into(wanted, config)
        patch = _merge_diff(live, wanted)
        if not patch:
            return live
        return attrs.evolve(request, action=kmock.action.UPDATE, data=patch)

    def _bump(self, request: kmock.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        old = copy.deepcopy(self.objects[key].raw)
        new = kmock_dicts.patch_dict(copy.deepcopy(old), request.data)
        meta = request.data.setdefault("metadata", {}) or {}
        request.data["metadata"] = meta
        if request.subresource is None and new.get("spec") != old.get("spec"):
            meta["generation"] = int(old.get("metadata", {}).get("generation", 1)) + 1
        meta["resourceVersion"] = str(next(self._versions))


def _drop_unapplied(obj: dict[str, Any], previous: dict[str, Any], config: dict[str, Any]) -> None:
    """Remove from `obj` what the manager applied before (`previous`) and no longer applies."""
    for key, before in previous.items():
        if key not in obj:
            continue
        if key not in config:
            del obj[key]
        elif isinstance(before, dict) and isinstance(config[key], dict) and isinstance(obj[key], dict):
            _drop_unapplied(obj[key], before, config[key])


def _merge_into(obj: dict[str, Any], config: dict[str, Any]) -> None:
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(obj.get(key), dict):
            _merge_into(obj[key], value)
        else:
            obj[key] = copy.deepcopy(value)


def _merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `old` into `new` (None deletes a key)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            nested = _merge_diff(old[key], value)
            if nested:
                patch[key] = nested
        elif key not in old or old[key] != value:
            patch[key] = value
    return patch


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_sample(name: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES / name).read_text())


class Cluster:
    """What a platform engineer and the kubelet do to the cluster, over the emulator's HTTP API."""

    def __init__(self, emulator: ClusterEmulator, registry: ModelRegistryView) -> None:
        self.emulator = emulator
        self.registry = registry

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.emulator.request(method, path, json=body, headers=headers) as response:
            if response.status == 404:
                return None
            assert response.status < 400, f"{method} {path}: {response.status} {await response.text()}"
            return await response.json(content_type=None)

    @staticmethod
    def path(kind: str, name: str | None = None, namespace: str | None = NAMESPACE) -> str:
        group, version, plural = {
            "ModelDeployment": ("serving.lexora.network", "v1alpha1", "modeldeployments"),
            "Deployment": ("apps", "v1", "deployments"),
            "Service": ("", "v1", "services"),
            "ConfigMap": ("", "v1", "configmaps"),
            "Pod": ("", "v1", "pods"),
            "Node": ("", "v1", "nodes"),
            "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
            "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
            "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
            "Secret": ("", "v1", "secrets"),
            "Event": ("", "v1", "events"),
            "Job": ("batch", "v1", "jobs"),
            "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
            "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices"),
        }[kind]
        base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    async def apply(self, manifest: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
        manifest = copy.deepcopy(manifest)
        manifest["metadata"]["namespace"] = namespace
        created = await self._call("POST", self.path(manifest["kind"], namespace=namespace), manifest)
        assert created is not None
        return created

    async def list(self, kind: str, namespace: str | None = NAMESPACE) -> list[dict[str, Any]]:
        listed = await self._call("GET", self.path(kind, namespace=namespace))
        return list((listed or {}).get("items") or [])

    async def get(self, kind: str, name: str, namespace: str | None = NAMESPACE) -> dict[str, Any] | None:
        return await self._call("GET", self.path(kind, name, namespace))

    async def patch(
        self, kind: str, name: str, patch: dict[str, Any], subresource: str = "", namespace: str = NAMESPACE
    ) -> dict[str, Any]:
        path = self.path(kind, name, namespace) + (f"/{subresource}" if subresource else "")
        patched = await self._call("PATCH", path, patch)
        assert patched is not None
        return patched

    async def delete(self, kind: str, name: str, namespace: str | None = NAMESPACE) -> None:
        await self._call("DELETE", self.path(kind, name, namespace))

    async def report_deployment(
        self, name: str, *, ready: int, replicas: int | None = None, slices: bool = True, **extra: Any
    ) -> None:
        """Play the Deployment controller + kubelet: this many replicas exist, this many are ready;
        and (`slices`) the EndpointSlice controller: pods <name>-pod-<i>, the first `ready` ready."""
        deployment = await self.get("Deployment", name)
        assert deployment is not None
        replicas = ready if replicas is None else replicas
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            **extra,
        }
        await self.patch("Deployment", name, {"status": status}, subresource="status")
        if slices:
            pods = [(f"{name}-pod-{i}", pod_ip(name, i), "ready" if i < ready else "starting") for i in range(replicas)]
            await self.report_slice(name, pods)

    async def report_slice(self, service: str, pods: list[tuple[str, str, str]], namespace: str = NAMESPACE) -> None:
        """Play the EndpointSlice controller for one Service: its slice holds these pods, each
        (pod name, pod IP, state), state one of ready, starting (not ready), terminating (still
        ready, as with a preStop hook, but on its way out). The slice mirrors the Service's labels."""
        live = await eventually(lambda: self.get("Service", service, namespace), what=f"Service {service}")
        conditions = {
            "ready": {"ready": True, "serving": True, "terminating": False},
            "starting": {"ready": False, "serving": False, "terminating": False},
            "terminating": {"ready": False, "serving": True, "terminating": True},
        }
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-x7k2p",
                "namespace": namespace,
                "labels": {
                    **(live["metadata"].get("labels") or {}),
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "ports": [
                {"name": port["name"], "port": port["port"], "protocol": "TCP"} for port in live["spec"]["ports"]
            ],
            "endpoints": [
                {
                    "addresses": [ip],
                    "conditions": conditions[state],
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
                }
                for pod, ip, state in pods
            ],
        }
        if await self.get("EndpointSlice", slice_["metadata"]["name"], namespace) is None:
            await self._call("POST", self.path("EndpointSlice", namespace=namespace), slice_)
        else:
            patch = {"endpoints": slice_["endpoints"], "ports": slice_["ports"]}
            await self.patch("EndpointSlice", slice_["metadata"]["name"], patch, namespace=namespace)

    async def add_pod(self, deployment: str, pod_name: str, status: dict[str, Any]) -> None:
        live = await self.get("Deployment", deployment)
        assert live is not None
        template = live["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
            "status": status,
        }
        await self._call("POST", self.path("Pod"), pod)

    async def add_node(self, name: str, labels: dict[str, str], gpus: int) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": str(gpus)}},
        }
        await self._call("POST", self.path("Node", namespace=None), node)

    async def run_job(
        self, name: str, *, phase: str, message: str = "", log: str | None = None, succeeded: bool | None = None
    ) -> None:
        """Play the Job controller and the kubelet: a pod of the Job (job-name label) in `phase`
        (Running, Succeeded, Failed) whose container ended with `message`, and the Job's status."""
        job = await self.get("Job", name)
        assert job is not None
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]["name"]
        state: dict[str, Any] = {"running": {}}
        if phase in ("Succeeded", "Failed"):
            state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "message": message}}
        pod_name = f"{name}-pod"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": NAMESPACE,
                "labels": {**template["metadata"]["labels"], "job-name": name},
            },
            "spec": template["spec"],
            "status": {"phase": phase, "containerStatuses": [{"name": container, "state": state}]},
        }
        if await self.get("Pod", pod_name) is None:
            await self._call("POST", self.path("Pod"), pod)
        else:
            await self.patch("Pod", pod_name, {"status": pod["status"]}, subresource="status")
        if log is not None:
            if self.emulator.pod_logs is None:
                self.emulator.pod_logs = {}
            self.emulator.pod_logs[(NAMESPACE, pod_name)] = log
        status: dict[str, Any] = {"active": 1} if phase == "Running" else {"active": 0}
        if phase == "Succeeded":
            status.update(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
        elif phase == "Failed":
            status.update(failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
        await self.patch("Job", name, {"status": status}, subresource="status")

    def record(self, model_id: str) -> ModelRecord | None:
        return self.registry.get(model_id)


def pod_ip(deployment: str, index: int) -> str:
    """The IP the tests give pod `index` of a Deployment: stable per name, distinct across names."""
    return f"10.{sum(deployment.encode()) % 250}.{len(deployment) % 250}.{index + 1}"


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "") -> Any:
    """Poll until `check` returns something truthy (and return it), or fail with the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: last value {last!r}")
