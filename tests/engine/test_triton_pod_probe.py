"""The Triton pod's readiness and liveness probes against the real tritonserver: they pass while the
model serves, and fail once its Python-backend stub process is killed, while Triton's own health
endpoints still answer 200 (which is why the operator's probes ask the model itself). The requests
for embedding and image models are the ones the real model-repo/ models accept.

The commands are the ones the operator renders, run with this interpreter as the image's python3
and the ConfigMap's files in a directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lexora_dev.processes import ManagedProcess
from lexora_dev.stack import start_triton
from lexora_operator.render import render_children
from lexora_operator.spec import parse_spec
from support.triton_processes import STUB, python_stubs

ROOT = Path(__file__).resolve().parents[2]
MODEL = "instant-echo"  # loads in well under a second; the chat models' tensors

EMBEDDING_MODEL, IMAGE_MODEL = "all-minilm-l6-v2", "flux-1-schnell"


def spec(model_id: str, kind: str) -> dict[str, Any]:
    """A Python-backend ModelDeployment on CPU; its Triton model is named after the id."""
    return {
        "model": {"id": model_id, "kind": kind, **({"contextLength": 4096} if kind != "image" else {})},
        "backend": "python",
        "triton": {"image": "nvcr.io/nvidia/tritonserver:25.01-py3"},
        "source": {"pvc": {"claimName": "models"}},
        "gpu": {"count": 0},
    }


@pytest.fixture
def triton(tmp_path: Path) -> Iterator[tuple[ManagedProcess, int]]:
    """(the tritonserver process, its HTTP port), serving a copy of model-repo/instant-echo."""
    repo = tmp_path / "models"
    shutil.copytree(ROOT / "model-repo" / MODEL, repo / MODEL)
    process, endpoint = start_triton(tmp_path / "state", model_repo=repo, timeout=120)
    try:
        assert endpoint.http_address is not None
        yield process, int(endpoint.http_address.rsplit(":", 1)[1])
    finally:
        process.stop()


def probe_commands(tmp_path: Path, port: int, spec: dict[str, Any]) -> dict[str, list[str]]:
    """The readiness and liveness commands of the rendered pod, runnable here."""
    children = render_children("probed", "lexora-models", parse_spec("probed", spec))
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    for key, text in children.config_map["data"].items():
        (config / key).write_text(text)
    triton = children.deployment["spec"]["template"]["spec"]["containers"][0]
    commands = {}
    for name in ("readinessProbe", "livenessProbe"):
        argv = triton[name]["exec"]["command"]
        assert argv[0] == "python3" and argv[3].startswith("/etc/lexora/model-repo/"), argv
        options = [f"--port={port}" if arg.startswith("--port=") else arg for arg in argv[4:]]
        commands[name] = [sys.executable, *argv[1:3], str(config / Path(argv[3]).name), *options]
    return commands


def stub_of(triton: ManagedProcess, model: str) -> int:
    """The pid of `model`'s one Python-backend stub under this tritonserver."""
    found = python_stubs(triton, model)
    assert len(found) == 1, f"expected one {STUB} for {model} under tritonserver, found {found}"
    return found[0]


def wait_dead(pid: int, timeout: float = 10) -> None:
    """Until `pid` has exited (a zombie until tritonserver reaps it counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running {timeout:.0f}s after SIGKILL")


def http_status(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.status)


def model_stats(port: int, model: str = MODEL) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/stats", timeout=5) as response:
        return json.loads(response.read())["model_stats"][0]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_probes_fail_when_the_stub_dies_while_triton_still_reports_healthy(
    triton: tuple[ManagedProcess, int], tmp_path: Path
) -> None:
    process, port = triton
    commands = probe_commands(tmp_path, port, spec("lexora/instant-echo", "chat"))
    assert commands["readinessProbe"][-1] == f"chat:{MODEL}"

    succeeded_before = model_stats(port)["inference_stats"]["success"]["count"]
    for name, command in commands.items():
        healthy = run(command)
        assert (healthy.returncode, healthy.stderr) == (0, ""), name

    # Triton updates a model's statistics just after it answers: wait until both probes' inferences
    # are counted, so that `last_inference` is the healthy probes' last before the stub is killed.
    deadline = time.monotonic() + 10
    while (served := model_stats(port))["inference_stats"]["success"]["count"] < succeeded_before + len(commands):
        assert time.monotonic() < deadline, served
        time.sleep(0.05)
    assert served["last_inference"] > 0
    stub = stub_of(process, MODEL)
    os.kill(stub, signal.SIGKILL)
    wait_dead(stub)

    for name, command in commands.items():
        started = time.monotonic()
        broken = run(command)
        assert broken.returncode == 1, (name, broken.stdout, broken.stderr)
        assert broken.stderr.splitlines() == [
            f"model '{MODEL}' cannot serve: HTTP 400: Stub process '{MODEL}_0_0' is not healthy."
        ], name
        assert time.monotonic() - started < 5, f"{name} took {time.monotonic() - started:.1f}s to fail"
    # Failures leave `last_inference` alone: a broken model never looks busy to the probe's stall rule.
    after = model_stats(port)
    assert after["last_inference"] == served["last_inference"]
    assert after["inference_stats"]["fail"]["count"] >= len(commands)
    # Triton itself: live, ready, and the model ready -- the very endpoints the probes used to be.
    process.check_alive()
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        assert http_status(port, path) == 200, path


@pytest.fixture(scope="module")
def media_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The HTTP port of a tritonserver serving model-repo/'s embedding and image models (FLUX with
    the tiny random weights: real pipeline, real request validation)."""
    state = tmp_path_factory.mktemp("probe-media")
    repo = state / "models"
    repo.mkdir()
    for model in (EMBEDDING_MODEL, IMAGE_MODEL):
        (repo / model).symlink_to(ROOT / "model-repo" / model)
    process, endpoint = start_triton(state / "state", model_repo=repo, timeout=300)
    try:
        assert endpoint.http_address is not None
        yield int(endpoint.http_address.rsplit(":", 1)[1])
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("model_id", "kind", "target"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "embedding", f"embedding:{EMBEDDING_MODEL}"),
        ("black-forest-labs/FLUX.1-schnell", "image", f"image:{IMAGE_MODEL}"),
    ],
)
def test_the_probe_asks_embedding_and_image_models_for_what_they_accept(
    media_triton: int, tmp_path: Path, model_id: str, kind: str, target: str
) -> None:
    # The liveness command: its 20 s leave room for the first image on CPU; readiness sends the same.
    command = probe_commands(tmp_path, media_triton, spec(model_id, kind))["livenessProbe"]
    assert command[-1] == target

    result = run(command)

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    stats = model_stats(media_triton, target.split(":", 1)[1])
    assert stats["inference_stats"]["success"]["count"] >= 1
