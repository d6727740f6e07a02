"""The cluster around the operator: what kube-controller-manager, the kubelet, kube-proxy and
cluster DNS do for a Triton Deployment, over the API emulator's HTTP API. Test harness.

- Deployment controller: one pod per desired replica from the Deployment's pod template; a changed
  template rolls the pods as the rendered strategy says (maxSurge 0: the old pod goes first);
  Deployment status (replicas, updatedReplicas, readyReplicas, observedGeneration).
- kubelet: each pod runs here (pod_runner.LocalPod): init containers to completion, then Triton;
  the startup probe, then the readiness probe every periodSeconds; the Pod object's status
  (init and container states, termination messages, the Ready condition) follows.
- PV provisioner: each PersistentVolumeClaim with a storage class is bound to a directory of its
  own (`PodEnvironment.claims`), which every pod mounting the claim sees, as a ReadWriteMany volume.
- Job controller: each Job's pod runs here to completion (pod_runner.LocalPod.run_job_pod), again
  after a failure up to backoffLimit; the Pod's status carries the container's termination message
  and the Job's status (active, succeeded, failed, the Complete or Failed condition) follows. The
  pods' logs are what the API serves for `GET pods/<name>/log` (`pod_logs`, set on the emulator).
- kube-proxy and DNS: each Service gets a cluster IP on the loopback network; its ports forward to
  its ready pods' target ports. `hosts` maps `<service>.<namespace>.svc.cluster.local` to that IP:
  the router reads it as its /etc/hosts (conftest.py), so it dials the addresses the operator
  publishes, unchanged.
- The pod network: each pod gets a pod IP on the loopback network too (status.podIP), whose
  container ports forward into the pod's network namespace, so anything here (the router) dials a
  replica directly, as a pod dials another pod's IP. A stopped pod's address resets what is
  connected to it and refuses what comes after, as a dead pod's does.
- EndpointSlice controller: one discovery.k8s.io/v1 EndpointSlice per Service (`<service>-<hash>`,
  the Service's labels plus `kubernetes.io/service-name`), listing every pod that matches the
  selector and has an IP: its address, the Service's ports by name with the pod's port numbers,
  the conditions ready, serving and terminating, and a targetRef to the Pod.
- Pod deletion (`kubectl delete pod`, a scale-down, a rollout): the Pod object gets its
  deletionTimestamp (the box's pods carry a finalizer of the kubelet's, so the emulator keeps the
  object while it terminates, as kube-apiserver does for a graceful deletion); the pod's endpoint
  turns ready false, terminating true at once; then the kubelet sends SIGTERM, SIGKILL after the
  grace period (metadata.deletionGracePeriodSeconds), and the endpoint and the object go.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import random
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pod_runner import ContainerFailed, LocalPod, PodEnvironment, decode_secret

from support.stack import RunningStack

NAMESPACE = "lexora-models"
# Held on the pods the box runs for Deployments: the object stays, with its deletionTimestamp, until
# the kubelet has stopped the pod (kube-apiserver keeps a gracefully deleted pod the same way).
KUBELET_FINALIZER = "box.lexora.local/kubelet"
# SIGTERM to SIGKILL for a pod the controllers retire (a scale-down, a rollout, a deleted
# Deployment): the rendered terminationGracePeriodSeconds (minutes, for draining) cut short.
RETIRE_GRACE_S = 5.0
SLICE_MANAGER = "endpointslice-controller.k8s.io"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class PodState:
    name: str
    namespace: str
    owner: str  # the Deployment
    template_hash: str
    labels: dict[str, str]
    pod: LocalPod
    ready: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    uid: str = ""
    address: PodAddress | None = None  # its pod IP, once the sandbox is up
    serving: bool = False  # the readiness probe's last word, kept while terminating
    terminating: bool = False  # deleted: on its way out

    @property
    def ip(self) -> str | None:
        return None if self.address is None else self.address.ip


class Api:
    """The emulator's HTTP API, for the controllers (synchronous: they run in threads)."""

    def __init__(self, base: str):
        self.http = httpx.Client(base_url=base, timeout=10)

    @staticmethod
    def path(api: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    def list(self, api: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        response = self.http.get(self.path(api, plural, namespace))
        response.raise_for_status()
        return list(response.json().get("items") or [])

    def get(self, api: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        response = self.http.get(self.path(api, plural, namespace, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def create(self, api: str, plural: str, namespace: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(self.path(api, plural, namespace), json=body)

    def patch(
        self, api: str, plural: str, namespace: str, name: str, body: dict[str, Any], subresource: str = ""
    ) -> httpx.Response:
        path = self.path(api, plural, namespace, name) + (f"/{subresource}" if subresource else "")
        return self.http.patch(path, json=body, headers={"Content-Type": "application/merge-patch+json"})

    def delete(self, api: str, plural: str, namespace: str, name: str) -> httpx.Response:
        return self.http.delete(self.path(api, plural, namespace, name))


class ServiceProxy:
    """kube-proxy for one Service: listens on the cluster IP's ports, forwards to a ready pod."""

    def __init__(self, ip: str, ports: list[dict[str, Any]], event: Callable[[str], None]):
        self.ip = ip
        self.event = event
        self.endpoints: list[PodState] = []
        self._listeners: list[socket.socket] = []
        self._closed = threading.Event()
        for port in ports:
            listener = socket.create_server((ip, int(port["port"])), reuse_port=False)
            self._listeners.append(listener)
            target = port.get("targetPort", port["port"])
            threading.Thread(target=self._accept, args=(listener, target), daemon=True, name=f"proxy-{ip}").start()

    def _accept(self, listener: socket.socket, target: int | str) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client, target), daemon=True).start()

    def _forward(self, client: socket.socket, target: int | str) -> None:
        ready = [p for p in self.endpoints if p.ready]
        if not ready:
            self.event(f"proxy {self.ip} {target}: no ready endpoint, refused")
            client.close()  # no endpoints: connection refused, as kube-proxy's REJECT rule
            return
        state = random.choice(ready)
        self.event(f"proxy {self.ip} {target} -> pod {state.name}")
        container = next(
            (c for c in state.pod.spec["containers"] for p in c.get("ports") or [] if p.get("name") == target),
            state.pod.spec["containers"][0],
        )
        try:
            upstream = state.pod.connect(state.pod.port_of(container, target))
        except OSError:
            client.close()
            return
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.close()


class PodAddress:
    """A pod's IP: listens on it at each of the pod's container ports and forwards every connection
    into the pod's network namespace. `close()` resets the connections (a dead pod's peer sees a
    reset) and stops listening (later ones are refused)."""

    def __init__(self, ip: str, pod: LocalPod):
        self.ip = ip
        self.pod = pod
        self._listeners: list[socket.socket] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.dying = False  # set by the kubelet as it kills the pod's processes
        ports = {int(p["containerPort"]) for c in pod.spec["containers"] for p in c.get("ports") or []}
        for port in sorted(ports):
            listener = socket.create_server((ip, port))
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, port), daemon=True, name=f"pod-{ip}").start()

    def _accept(self, listener: socket.socket, port: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client, port), daemon=True).start()

    def _forward(self, client: socket.socket, port: int) -> None:
        try:
            upstream = self.pod.connect(port)
        except (OSError, AssertionError):
            _reset(client)  # nothing listens there (yet): refused
            return
        with self._lock:
            if self._closed:
                _reset(client)
                upstream.close()
                return
            self._connections.add(client)
        threading.Thread(target=_pump_forward, args=(client, upstream), daemon=True).start()
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._connections.discard(client)
            dying = self.dying
        if dying:
            _reset(client)  # the pod's end went with its processes: the peer sees a reset
        else:
            for sock in (upstream, client):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for sock in (upstream, client):
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections = list(self._connections)
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes its accept()
            with contextlib.suppress(OSError):
                listener.close()
        for client in connections:
            _reset(client)


def _pump_forward(client: socket.socket, upstream: socket.socket) -> None:
    """Client to pod; the client's socket is the other direction's to close (a FIN or a reset)."""
    try:
        while data := client.recv(65536):
            upstream.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN. SHUT_RD sends nothing; it wakes a thread
    blocked reading the socket, which would otherwise hold it open past close()."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class ClusterInABox:
    """The controllers, the kubelet and kube-proxy, reconciling every `period` seconds."""

    def __init__(self, api_url: str, environment: PodEnvironment, workdir: Path, hosts: Path, period: float = 0.3):
        self.api = Api(api_url)
        self.environment = environment
        self.workdir = workdir
        self.hosts = hosts
        self.period = period
        self.pods: dict[str, PodState] = {}
        self.services: dict[tuple[str, str], ServiceProxy] = {}
        self.errors: list[str] = []
        self._ips = (f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{i}" for i in range(2, 255))
        # Pod IPs: another part of 127/8 than the Services' cluster IPs.
        first = random.randint(10, 99)
        self._pod_ips = (f"127.{first}.{b}.{c}" for b in range(256) for c in range(2, 255))
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}  # what the slice controller last wrote
        self.addresses: dict[str, str] = {}  # every pod IP given out -> its pod's name
        self._service_objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._slice_lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = 0
        self._base_hosts = Path("/etc/hosts").read_text()
        self.hosts.write_text(self._base_hosts)
        self._thread = threading.Thread(target=self._run, name="cluster-in-a-box", daemon=True)
        self.log_path = workdir / "events.log"
        self.jobs: dict[tuple[str, str], threading.Thread] = {}
        self.job_pods: dict[tuple[str, str], LocalPod] = {}  # every Job pod run, by (namespace, name)
        self.pod_logs = PodLogs(self)

    def event(self, what: str) -> None:
        """One line in events.log: what the controllers and kubelet did, for a failing test's reader."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {what}\n")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        stopping = [
            threading.Thread(target=self._stop_pod, args=(state,), kwargs={"delete": False, "grace": 2})
            for state in list(self.pods.values())
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join(30)
        for proxy in self.services.values():
            proxy.close()
        for job_pod in list(self.job_pods.values()):
            job_pod.stop(grace=2)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._sync()
            except Exception:  # noqa: BLE001 - reported by the tests, the loop carries on
                self.errors.append(traceback.format_exc())

    # ---- one pass ----------------------------------------------------------------------------------
    def _sync(self) -> None:
        # Claims first, then the Jobs and Deployments, then the ConfigMaps and Secrets: what a listed
        # pod template refers to was created before it (by the operator), so it is seen.
        self._sync_claims()
        jobs = self.api.list("batch/v1", "jobs")
        deployments = {
            (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in self.api.list("apps/v1", "deployments")
        }
        self._refresh_environment()
        self._sync_jobs(jobs)
        for pod in self.api.list("v1", "pods"):
            meta = pod["metadata"]
            state = self.pods.get(meta["name"])
            if meta.get("deletionTimestamp") and state is not None and state.namespace == meta.get("namespace"):
                grace = meta.get("deletionGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30))
                self._terminate(state, float(grace))  # kubectl delete pod
        for state in list(self.pods.values()):
            if (state.namespace, state.owner) not in deployments:
                self._retire(state)
        for key, deployment in deployments.items():
            self._sync_deployment(key, deployment)
        self._sync_services()

    def _refresh_environment(self) -> None:
        self.environment.config_maps = {
            cm["metadata"]["name"]: dict(cm.get("data") or {}) for cm in self.api.list("v1", "configmaps")
        }
        self.environment.secrets = {s["metadata"]["name"]: decode_secret(s) for s in self.api.list("v1", "secrets")}

    def _sync_deployment(self, key: tuple[str, str], deployment: dict[str, Any]) -> None:
        namespace, name = key
        spec = deployment["spec"]
        desired = int(spec.get("replicas", 1))
        template = spec["template"]
        current_hash = _template_hash(template)
        # Terminating pods count for nothing: a deleted pod's replacement starts while it drains.
        mine = [s for s in list(self.pods.values()) if (s.namespace, s.owner) == key and not s.terminating]
        old = [s for s in mine if s.template_hash != current_hash]
        updated = [s for s in mine if s.template_hash == current_hash]
        # maxSurge 0 / maxUnavailable 1: an old pod goes before its replacement starts.
        if old:
            self._retire(old[0])
        elif len(updated) < desired:
            self._start_pod(namespace, name, template, current_hash)
        elif len(updated) > desired:
            self._retire(updated[-1])
        mine = [s for s in list(self.pods.values()) if (s.namespace, s.owner) == key and not s.terminating]
        ready = sum(1 for s in mine if s.ready)
        fresh = sum(1 for s in mine if s.template_hash == current_hash)
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(mine),
            "updatedReplicas": fresh,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, desired - ready),
        }
        if {k: (deployment.get("status") or {}).get(k) for k in status} != status:
            self.api.patch("apps/v1", "deployments", namespace, name, {"status": status}, "status")

    def _start_pod(self, namespace: str, owner: str, template: dict[str, Any], template_hash: str) -> None:
        self._counter += 1
        name = f"{owner}-{template_hash}-{self._counter}"
        labels = dict(template["metadata"].get("labels") or {})
        pod = LocalPod(name, namespace, template["spec"], self.environment, self.workdir)
        state = PodState(name, namespace, owner, template_hash, labels, pod)
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "finalizers": [KUBELET_FINALIZER]},
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }
        created = self.api.create("v1", "pods", namespace, body)
        created.raise_for_status()
        state.uid = str(created.json()["metadata"].get("uid", ""))
        self.pods[name] = state
        self.event(f"pod {namespace}/{name} created")
        state.thread = threading.Thread(target=self._kubelet, args=(state,), name=f"kubelet-{name}", daemon=True)
        state.thread.start()

    def delete_pod(self, name: str, grace: float, namespace: str = NAMESPACE) -> None:
        """`kubectl delete pod <name> --grace-period=<grace>`: the API marks the Pod deleted (its
        deletionTimestamp, and the grace period), and this box's kubelet takes it from there."""
        patch = {"metadata": {"deletionGracePeriodSeconds": int(grace)}}
        self.api.patch("v1", "pods", namespace, name, patch).raise_for_status()
        self.api.delete("v1", "pods", namespace, name).raise_for_status()

    def _retire(self, state: PodState) -> None:
        """A controller deletes the pod (a scale-down, a rollout, its Deployment gone)."""
        if state.terminating:
            return
        self.api.delete("v1", "pods", state.namespace, state.name)
        self._terminate(state, RETIRE_GRACE_S)

    def _terminate(self, state: PodState, grace: float) -> None:
        """The pod is deleted: it terminates, in a thread of its own."""
        if state.terminating:
            return
        state.terminating = True
        state.ready = False
        threading.Thread(target=self._terminating, args=(state, grace), name=f"terminate-{state.name}").start()

    def _terminating(self, state: PodState, grace: float) -> None:
        try:
            self.event(f"pod {state.namespace}/{state.name} terminating (grace {grace:g} s)")
            # Out of the Service's ready endpoints before the signal: its slice says terminating.
            self._sync_slices()
            mains = [c["name"] for c in state.pod.spec["containers"]]
            statuses = [{"name": n, "ready": False, "state": {"running": {}}} for n in mains]
            self._report(state, containerStatuses=statuses)
            self._stop_pod(state, grace=grace)
            self._sync_slices()
        except Exception:  # noqa: BLE001 - the test reads the errors
            self.errors.append(f"pod {state.name} terminating: {traceback.format_exc()}")

    def _stop_pod(self, state: PodState, delete: bool = True, grace: float = 5) -> None:
        """SIGTERM, SIGKILL after `grace`; the pod's IP resets its connections; the object goes."""
        state.stopping.set()
        state.ready = False
        if state.address is not None:
            state.address.dying = True
        state.pod.stop(grace)
        if state.address is not None:
            state.address.close()
        if state.thread is not None:
            state.thread.join(30)
        self.pods.pop(state.name, None)
        self.event(f"pod {state.namespace}/{state.name} stopped")
        if delete:
            self.api.delete("v1", "pods", state.namespace, state.name)
            # The kubelet is done with it: without its finalizer the deleted object goes.
            self.api.patch("v1", "pods", state.namespace, state.name, {"metadata": {"finalizers": []}})

    # ---- the kubelet -------------------------------------------------------------------------------
    def _report(self, state: PodState, **status: Any) -> None:
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if state.ready else "False"},
        ]
        state.status = {"conditions": conditions, **state.status, **status}
        state.status["conditions"] = conditions
        if state.ip is not None:
            state.status.update(podIP=state.ip, podIPs=[{"ip": state.ip}])
        if not state.stopping.is_set():
            self.api.patch("v1", "pods", state.namespace, state.name, {"status": state.status}, "status")

    def _kubelet(self, state: PodState) -> None:
        pod, spec = state.pod, state.pod.spec
        inits = [c["name"] for c in spec.get("initContainers") or []]
        mains = [c["name"] for c in spec["containers"]]
        waiting = {"waiting": {"reason": "PodInitializing"}}
        try:
            pod.start()
            state.address = PodAddress(next(self._pod_ips), pod)
            self.addresses[state.address.ip] = state.name
            self.event(f"pod {state.namespace}/{state.name} at {state.ip}")
            self._report(
                state,
                phase="Pending",
                initContainerStatuses=[{"name": n, "ready": False, "state": {"running": {}}} for n in inits],
                containerStatuses=[{"name": n, "ready": False, "state": waiting} for n in mains],
            )
            pod.run_init_containers()
            done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
            self._report(
                state,
                phase="Running",
                initContainerStatuses=[{"name": n, "ready": True, "state": done} for n in inits],
                containerStatuses=[{"name": n, "ready": False, "state": {"running": {}}} for n in mains],
            )
            pod.start_containers()
            triton = spec["containers"][0]
            startup = triton.get("startupProbe")
            if startup:
                allowed = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
                pod.wait_for_probe(triton, startup, time.monotonic() + allowed)
            readiness = triton.get("readinessProbe")
            while not state.stopping.is_set():
                code = pod.container_exited(triton["name"])
                if code is not None:
                    raise ContainerFailed(triton["name"], code, pod.termination_message(triton))
                ok, said = pod.probe(triton, readiness) if readiness else (True, "")
                if state.stopping.is_set():
                    return  # stopped: out of the Service's endpoints for good
                state.serving = ok
                ready = ok and not state.terminating  # terminating: never ready again
                if ready != state.ready:
                    self.event(f"pod {state.name} {'ready' if ready else 'not ready'}: {said}")
                    state.ready = ready
                    statuses = [{"name": n, "ready": ready, "state": {"running": {}}} for n in mains]
                    self._report(state, phase="Running", containerStatuses=statuses)
                state.stopping.wait(readiness.get("periodSeconds", 10) if readiness and ok else 1)
        except ContainerFailed as failed:
            if state.stopping.is_set():
                return
            state.ready = False
            terminated = {"terminated": {"exitCode": failed.exit_code, "reason": "Error", "message": failed.message}}
            key = "initContainerStatuses" if failed.container in inits else "containerStatuses"
            names = inits if key == "initContainerStatuses" else mains
            statuses = [
                {"name": n, "ready": False, "state": terminated if n == failed.container else waiting} for n in names
            ]
            self._report(state, phase="Failed" if key == "initContainerStatuses" else "Running", **{key: statuses})
            self.errors.append(f"pod {state.name}: {failed}")
            self.event(f"pod {state.name} failed: {failed}")
        except Exception:  # noqa: BLE001 - the test reads the errors
            if not state.stopping.is_set():
                self.errors.append(f"pod {state.name}: {traceback.format_exc()}")

    # ---- the PV provisioner and the Job controller -------------------------------------------------
    def _sync_claims(self) -> None:
        for claim in self.api.list("v1", "persistentvolumeclaims"):
            meta, spec = claim["metadata"], claim.get("spec") or {}
            if (claim.get("status") or {}).get("phase") == "Bound" or not spec.get("storageClassName"):
                continue
            volume = self.workdir / "volumes" / f"{meta['namespace']}.{meta['name']}"
            volume.mkdir(parents=True, exist_ok=True)
            self.environment.claims[meta["name"]] = volume
            status = {
                "phase": "Bound",
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
            }
            self.api.patch(
                "v1", "persistentvolumeclaims", meta["namespace"], meta["name"], {"status": status}, "status"
            )
            self.event(f"claim {meta['namespace']}/{meta['name']} bound to {volume}")

    def _sync_jobs(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            key = (job["metadata"]["namespace"], job["metadata"]["name"])
            finished = any(
                c.get("type") in ("Complete", "Failed") for c in (job.get("status") or {}).get("conditions") or []
            )
            if key in self.jobs or finished:
                continue
            volumes = job["spec"]["template"]["spec"].get("volumes") or []
            claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v]
            if any(claim not in self.environment.claims for claim in claims):
                continue  # its pod would be Pending on an unbound claim: try again next pass
            thread = threading.Thread(target=self._job_controller, args=(job,), name=f"job-{key[1]}", daemon=True)
            self.jobs[key] = thread
            thread.start()

    def _job_controller(self, job: dict[str, Any]) -> None:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        uid = job["metadata"].get("uid", "")
        template = job["spec"]["template"]
        attempts = int(job["spec"].get("backoffLimit", 6)) + 1
        failed = 0
        try:
            for _ in range(attempts):
                if self._stop.is_set():
                    return
                if self._run_job_pod(namespace, name, uid, template, failed):
                    status = {
                        "active": None,
                        "succeeded": 1,
                        "completionTime": _now(),
                        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": _now()}],
                    }
                    self.api.patch("batch/v1", "jobs", namespace, name, {"status": status}, "status")
                    self.event(f"job {namespace}/{name} complete")
                    return
                failed += 1
            condition = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
            status = {"active": None, "failed": failed, "conditions": [{**condition, "lastTransitionTime": _now()}]}
            self.api.patch("batch/v1", "jobs", namespace, name, {"status": status}, "status")
            self.event(f"job {namespace}/{name} failed")
        except Exception:  # noqa: BLE001 - the test reads the errors
            if not self._stop.is_set():
                self.errors.append(f"job {name}: {traceback.format_exc()}")

    def _run_job_pod(self, namespace: str, job: str, uid: str, template: dict[str, Any], failed: int) -> bool:
        """One pod of the Job, run to completion here: whether it succeeded."""
        name = f"{job}-{''.join(random.choices('bcdfghjklmnpqrstvwxz2456789', k=5))}"
        labels = {
            **(template["metadata"].get("labels") or {}),
            "job-name": job,
            "batch.kubernetes.io/job-name": job,
            "controller-uid": uid,
        }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }
        self.api.create("v1", "pods", namespace, body).raise_for_status()
        self.event(f"pod {namespace}/{name} created for job {job}")
        pod = LocalPod(name, namespace, template["spec"], self.environment, self.workdir)
        self.job_pods[(namespace, name)] = pod
        containers = [c["name"] for c in template["spec"]["containers"]]

        def report(phase: str, states: dict[str, dict[str, Any]]) -> None:
            statuses = [{"name": c, "ready": phase == "Running", "state": states[c]} for c in containers]
            status = {"phase": phase, "containerStatuses": statuses}
            self.api.patch("v1", "pods", namespace, name, {"status": status}, "status")

        try:
            pod.start()
            report("Running", {c: {"running": {"startedAt": _now()}} for c in containers})
            self.api.patch(
                "batch/v1", "jobs", namespace, job, {"status": {"active": 1, "failed": failed or None}}, "status"
            )
            pod.run_job_pod()
        except ContainerFailed as failure:
            exited = {"terminated": {"exitCode": failure.exit_code, "reason": "Error", "message": failure.message}}
            report("Failed", {c: exited if c == failure.container else {"waiting": {}} for c in containers})
            self.event(f"pod {namespace}/{name} failed: {failure}")
            return False
        finally:
            pod.stop(grace=2)
        by_name = {c["name"]: c for c in template["spec"]["containers"]}
        report(
            "Succeeded",
            {
                c: {
                    "terminated": {"exitCode": 0, "reason": "Completed", "message": pod.termination_message(by_name[c])}
                }
                for c in containers
            },
        )
        self.event(f"pod {namespace}/{name} succeeded")
        return True

    # ---- kube-proxy and DNS ------------------------------------------------------------------------
    def _sync_services(self) -> None:
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in self.api.list("v1", "services")}
        for key in [k for k in self.services if k not in services]:
            self.services.pop(key).close()
        for key, service in services.items():
            if key not in self.services:
                self.services[key] = ServiceProxy(next(self._ips), service["spec"]["ports"], self.event)
                self.event(f"service {key[0]}/{key[1]} at {self.services[key].ip}")
            self.services[key].endpoints = self._selected(service)
        with self._slice_lock:
            self._service_objects = services
        self._sync_slices()
        entries = "".join(
            f"{proxy.ip}\t{name}.{namespace}.svc.cluster.local\n" for (namespace, name), proxy in self.services.items()
        )
        wanted = self._base_hosts + entries
        if self.hosts.read_text() != wanted:
            with open(self.hosts, "r+") as f:  # in place: the router's bind mount holds this inode
                f.write(wanted)
                f.truncate()

    def _selected(self, service: dict[str, Any]) -> list[PodState]:
        selector = service["spec"].get("selector") or {}
        namespace = service["metadata"]["namespace"]
        return [
            s
            for s in list(self.pods.values())
            if s.namespace == namespace and all(s.labels.get(k) == v for k, v in selector.items())
        ]

    # ---- the EndpointSlice controller --------------------------------------------------------------
    def _sync_slices(self) -> None:
        """Each Service's EndpointSlice as its pods are now; written when it changed."""
        with self._slice_lock:
            services = dict(self._service_objects)
            for key in [k for k in self.slices if k not in services]:
                gone = self.slices.pop(key)
                self.api.delete("discovery.k8s.io/v1", "endpointslices", key[0], gone["metadata"]["name"])
            for key, service in services.items():
                wanted = endpoint_slice(service, self._selected(service))
                written = self.slices.get(key)
                if written is None:
                    response = self.api.create("discovery.k8s.io/v1", "endpointslices", key[0], wanted)
                    if response.status_code == 409:  # left from an earlier pass that did not finish
                        response = self.api.patch(
                            "discovery.k8s.io/v1", "endpointslices", key[0], wanted["metadata"]["name"], wanted
                        )
                elif written != wanted:
                    changed = {k: wanted[k] for k in ("endpoints", "ports")}
                    changed["metadata"] = {"labels": wanted["metadata"]["labels"]}
                    response = self.api.patch(
                        "discovery.k8s.io/v1", "endpointslices", key[0], wanted["metadata"]["name"], changed
                    )
                else:
                    continue
                response.raise_for_status()
                self.slices[key] = wanted
                ready = [e["targetRef"]["name"] for e in wanted["endpoints"] if e["conditions"]["ready"]]
                ending = [e["targetRef"]["name"] for e in wanted["endpoints"] if e["conditions"]["terminating"]]
                self.event(f"endpointslice {key[0]}/{wanted['metadata']['name']}: ready {ready}, terminating {ending}")


def _target_port(state: PodState, target: int | str) -> int | None:
    """A Service port's targetPort as a number on this pod: a named port looked up in its containers."""
    for container in state.pod.spec["containers"]:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return int(target) if str(target).isdigit() else None


def endpoint_slice(service: dict[str, Any], pods: list[PodState]) -> dict[str, Any]:
    """The discovery.k8s.io/v1 EndpointSlice kube-controller-manager keeps for `service`: every
    selected pod with an IP, with its conditions and a reference to the Pod; the Service's ports by
    name, with the pods' port numbers."""
    meta = service["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with_ip = sorted((s for s in pods if s.ip is not None), key=lambda s: s.name)
    ports: list[dict[str, Any]] = []
    for port in service["spec"].get("ports") or []:
        number = _target_port(with_ip[0], port.get("targetPort", port["port"])) if with_ip else None
        if number is None:
            continue
        entry: dict[str, Any] = {"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")}
        if port.get("appProtocol"):
            entry["appProtocol"] = port["appProtocol"]
        ports.append(entry)
    endpoints = [
        {
            "addresses": [s.ip],
            "conditions": {"ready": s.ready and not s.terminating, "serving": s.serving, "terminating": s.terminating},
            "targetRef": {"kind": "Pod", "namespace": s.namespace, "name": s.name, "uid": s.uid},
        }
        for s in with_ip
    ]
    labels = {
        **(meta.get("labels") or {}),
        "kubernetes.io/service-name": name,
        "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
    }
    suffix = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:5]
    owner = {"apiVersion": "v1", "kind": "Service", "name": name, "uid": meta.get("uid", "")}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-{suffix}",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


class PodLogs:
    """`GET pods/<name>/log` as the kubelet answers it: the tail of the pod's first container's
    log, for the API emulator (its `pod_logs`); None for a pod this box does not run."""

    def __init__(self, cluster: ClusterInABox, lines: int = 20):
        self.cluster = cluster
        self.lines = lines

    def get(self, key: tuple[str, str]) -> str | None:
        pod = self.cluster.job_pods.get(key)
        if pod is None:
            state = self.cluster.pods.get(key[1])
            pod = state.pod if state is not None and state.namespace == key[0] else None
        if pod is None:
            return None
        return pod.logs(pod.spec["containers"][0]["name"], self.lines) + "\n"


@dataclass
class Box:
    """What the tests get (conftest.py's `box`): the API's URL, the box, and the platform."""

    api_url: str
    cluster: ClusterInABox
    platform: RunningStack
