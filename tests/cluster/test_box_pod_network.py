"""The box's pod network and EndpointSlice controller on their own, with a small HTTP server as the
pod's container (no Triton, seconds): each pod answers on its own pod IP, which its Pod object
carries; the Service's EndpointSlice lists it as kube-controller-manager would; a deleted pod is
terminating in its slice before it is stopped, then leaves it, and its IP resets and refuses."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from box_api import api_emulator
from cluster_box import KUBELET_FINALIZER, NAMESPACE, ClusterInABox
from pod_runner import LocalImage, PodEnvironment

pytestmark = pytest.mark.timeout(120)

IMAGE = "box.local/http-server:1"
LABELS = {"app.kubernetes.io/name": "echo"}
# A server that answers GET with the pod's hostname, slowly when asked (a long request to cut), and
# ignores SIGTERM: it lives through the grace period until SIGKILL.
SERVER = """
import http.server, os, signal, socketserver, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
        self.wfile.write(os.environ["HOSTNAME"].encode()); self.wfile.flush()
        if self.path == "/slow":
            time.sleep(60)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("127.0.0.1", 8080), H).serve_forever()
"""


def waited(check: Callable[[], Any], cluster: ClusterInABox, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert not cluster.errors, "\n".join(cluster.errors)
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: last value {last!r}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterInABox]:
    environment = PodEnvironment(images={IMAGE: LocalImage()})
    with api_emulator() as (api_url, _):
        box = ClusterInABox(api_url, environment, tmp_path / "pods", tmp_path / "hosts", period=0.1)
        box.start()
        try:
            yield box
        finally:
            box.stop()


def deploy(cluster: ClusterInABox, replicas: int) -> None:
    container = {
        "name": "server",
        "image": IMAGE,
        "command": [sys.executable, "-c", SERVER],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    template = {"metadata": {"labels": LABELS}, "spec": {"containers": [container]}}
    deployment = {
        "metadata": {"name": "echo", "namespace": NAMESPACE},
        "spec": {"replicas": replicas, "template": template},
    }
    service = {
        "metadata": {"name": "echo", "namespace": NAMESPACE, "labels": {"team": "box"}},
        "spec": {"selector": LABELS, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    }
    cluster.api.create("v1", "services", NAMESPACE, service).raise_for_status()
    cluster.api.create("apps/v1", "deployments", NAMESPACE, deployment).raise_for_status()


def the_slice(cluster: ClusterInABox) -> dict[str, Any]:
    """The Service's one EndpointSlice (an empty one until the controller has made it)."""
    items = cluster.api.list("discovery.k8s.io/v1", "endpointslices", NAMESPACE)
    assert len(items) <= 1, items
    return items[0] if items else {"endpoints": []}


def ready_ips(cluster: ClusterInABox) -> list[str]:
    endpoints = the_slice(cluster)["endpoints"] or []
    return [e["addresses"][0] for e in endpoints if e["conditions"]["ready"]]


def test_each_pod_answers_on_its_ip_and_its_service_slice_lists_it(cluster: ClusterInABox) -> None:
    deploy(cluster, replicas=2)
    ips = waited(lambda: len(ready_ips(cluster)) == 2 and ready_ips(cluster), cluster, 30, "two ready endpoints")
    pods = {p["metadata"]["name"]: p for p in cluster.api.list("v1", "pods", NAMESPACE)}
    assert sorted(p["status"]["podIP"] for p in pods.values()) == sorted(ips)
    for ip in ips:
        answer = httpx.get(f"http://{ip}:8080/", timeout=5)
        pod = next(name for name, p in pods.items() if p["status"]["podIP"] == ip)
        assert answer.status_code == 200 and answer.text == pod  # that pod, no other

    item = the_slice(cluster)
    assert item["metadata"]["name"].startswith("echo-") and item["addressType"] == "IPv4"
    assert item["metadata"]["labels"] == {
        "team": "box",
        "kubernetes.io/service-name": "echo",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert item["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    for endpoint in item["endpoints"]:
        assert endpoint["conditions"] == {"ready": True, "serving": True, "terminating": False}
        ref = endpoint["targetRef"]
        assert ref["kind"] == "Pod" and ref["namespace"] == NAMESPACE
        assert pods[ref["name"]]["status"]["podIP"] == endpoint["addresses"][0]


def test_a_deleted_pod_terminates_in_its_slice_then_leaves_and_its_ip_resets(cluster: ClusterInABox) -> None:
    deploy(cluster, replicas=1)
    [ip] = waited(lambda: ready_ips(cluster), cluster, 30, "a ready endpoint")
    [state] = cluster.pods.values()
    assert cluster.api.get("v1", "pods", NAMESPACE, state.name)["metadata"]["finalizers"] == [KUBELET_FINALIZER]  # type: ignore[index]
    # A request in flight on the pod: its connection is reset when the pod is killed.
    held = socket.create_connection((ip, 8080), timeout=10)
    held.sendall(b"GET /slow HTTP/1.0\r\n\r\n")
    answered = b""
    while state.name.encode() not in answered:
        answered += held.recv(4096)

    # SIGTERM, then SIGKILL two seconds later: the connection to its IP is reset.
    cluster.delete_pod(state.name, grace=2)

    def terminating() -> dict[str, Any] | None:
        endpoints = the_slice(cluster)["endpoints"]
        mine = [e for e in endpoints if e["targetRef"]["name"] == state.name]
        return mine[0] if mine and mine[0]["conditions"]["terminating"] else None

    endpoint = waited(terminating, cluster, 10, "the endpoint terminating")
    assert endpoint["conditions"]["ready"] is False
    deleting = cluster.api.get("v1", "pods", NAMESPACE, state.name)
    assert deleting is not None and deleting["metadata"].get("deletionTimestamp")

    waited(
        lambda: state.name not in [e["targetRef"]["name"] for e in the_slice(cluster)["endpoints"]],
        cluster,
        15,
        "the endpoint gone",
    )
    with pytest.raises(ConnectionResetError):
        while held.recv(4096):
            pass
    with pytest.raises(OSError):
        socket.create_connection((ip, 8080), timeout=2)
    waited(lambda: cluster.api.get("v1", "pods", NAMESPACE, state.name) is None, cluster, 10, "the Pod object gone")
    # The Deployment's replacement, on an IP of its own.
    [replacement] = waited(lambda: ready_ips(cluster), cluster, 30, "the replacement ready")
    assert replacement != ip
