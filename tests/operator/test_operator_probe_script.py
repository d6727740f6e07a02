"""The Triton container's probe script, run as the kubelet runs it (`python3 -I -S probe.py ...`)
against a stand-in for Triton's HTTP API that answers as Triton 2.51 does, broken engine included.

tests/engine/test_triton_pod_probe.py runs the same script against the real tritonserver.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import json
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from operator_support import load_sample

from lexora_operator import probe_script
from lexora_operator.render import render_children
from lexora_operator.spec import parse_spec

SCRIPT = Path(probe_script.__file__)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
STUB_DEAD = "Stub process 'm_0_0' is not healthy."


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def json_answer(values: dict[str, Any], status: int = 200) -> Answer:
    return Answer(status=status, body=json.dumps(values).encode())


class FakeTriton:
    """Answers per path; records each request's path and JSON body. Stats report `last_inference`."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.last_inference_ms = 0
        self.requests: list[tuple[str, Any]] = []
        self.release = threading.Event()  # set at teardown: delayed answers stop waiting
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, answer: Answer) -> None:
                if answer.delay_s:
                    fake.release.wait(answer.delay_s)
                with contextlib.suppress(ConnectionError):  # the probe gave up waiting
                    self.send_response(answer.status)
                    for name, value in {"Content-Length": str(len(answer.body)), **answer.headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(answer.body)

            def do_GET(self) -> None:
                fake.requests.append((self.path, None))
                if self.path.endswith("/stats"):
                    stats = {"name": "m", "version": "1", "last_inference": fake.last_inference_ms}
                    self._send(json_answer({"model_stats": [stats]}))
                else:
                    self._send(Answer(status=404))

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body))
                self._send(fake.answers.get(self.path, Answer(status=404, body=b'{"error": "unknown model"}')))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def completed_ago(self, seconds: float) -> None:
        self.last_inference_ms = int((time.time() - seconds) * 1000)


@pytest.fixture
def triton() -> Iterator[FakeTriton]:
    fake = FakeTriton()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        fake.server.shutdown()
        fake.server.server_close()


def probe(port: int, *targets: str, timeout: float = 2, stall: float = 120) -> subprocess.CompletedProcess[str]:
    # -I -S as in the pod: no environment, no site-packages, so a third-party import would fail here.
    argv = [sys.executable, "-I", "-S", str(SCRIPT), f"--port={port}", f"--timeout={timeout}"]
    argv += [f"--stall-seconds={stall}", *targets]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)


def test_the_script_needs_only_the_standard_library_of_python_3_8() -> None:
    """It runs with whatever python3 the Triton image has (3.8 in NVIDIA's Ubuntu 20.04 releases)."""
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"), feature_version=(3, 8))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in imported} <= sys.stdlib_module_names | {"__future__"}


CHAT_OK = json_answer({"model_name": "m", "text_output": "Hello", "num_output_tokens": 1})


def test_a_chat_model_that_generates_a_token_is_healthy(triton: FakeTriton) -> None:
    triton.answers["/v2/models/m/generate"] = CHAT_OK

    result = probe(triton.port, "chat:m")

    assert (result.returncode, result.stderr) == (0, "")
    path, body = triton.requests[0]
    assert path == "/v2/models/m/generate"
    assert body["text_input"] and body["max_tokens"] == 1


def test_a_dead_stub_fails_the_probe_with_the_model_and_the_engine_error_on_one_line(triton: FakeTriton) -> None:
    triton.answers["/v2/models/m/generate"] = json_answer({"error": STUB_DEAD}, status=400)
    triton.completed_ago(1)  # it served a moment ago: an error answer fails all the same

    result = probe(triton.port, "chat:m")

    assert result.returncode == 1
    assert result.stderr == f"model 'm' cannot serve: HTTP 400: {STUB_DEAD}\n"


def test_an_answer_without_the_expected_output_fails(triton: FakeTriton) -> None:
    triton.answers["/v2/models/m/generate"] = json_answer({"model_name": "m"})

    result = probe(triton.port, "chat:m")

    assert result.returncode == 1
    assert "answered without text_output" in result.stderr


def test_a_busy_model_that_completed_an_inference_recently_passes_without_answering_in_time(
    triton: FakeTriton,
) -> None:
    triton.answers["/v2/models/m/generate"] = Answer(delay_s=30, body=CHAT_OK.body)
    triton.completed_ago(20)

    started = time.monotonic()
    result = probe(triton.port, "chat:m", timeout=1.5, stall=120)

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 5
    assert "busy" in result.stdout


def test_a_stuck_model_fails_once_nothing_completed_for_the_stall_allowance(triton: FakeTriton) -> None:
    triton.answers["/v2/models/m/generate"] = Answer(delay_s=30, body=CHAT_OK.body)
    triton.completed_ago(200)

    started = time.monotonic()
    result = probe(triton.port, "chat:m", timeout=1.5, stall=120)

    # The script keeps to its own deadline, so the kubelet's (above it) sees the reason, not a timeout.
    assert time.monotonic() - started < 1.5 + 1
    assert result.returncode == 1
    assert "model 'm' cannot serve: no answer within" in result.stderr
    assert re.search(r"completed no inference for 20[01]s$", result.stderr.strip())


def test_a_model_that_never_answered_anything_is_not_busy(triton: FakeTriton) -> None:
    triton.answers["/v2/models/m/generate"] = Answer(delay_s=30, body=CHAT_OK.body)

    result = probe(triton.port, "chat:m", timeout=1.5)

    assert result.returncode == 1
    assert "has never completed an inference" in result.stderr


def test_no_triton_listening_fails(triton: FakeTriton) -> None:
    port = triton.port
    triton.server.shutdown()
    triton.server.server_close()

    result = probe(port, "chat:m")

    assert result.returncode == 1
    assert f"cannot reach Triton at 127.0.0.1:{port}" in result.stderr


def test_an_embedding_model_is_asked_for_one_embedding(triton: FakeTriton) -> None:
    triton.answers["/v2/models/e/infer"] = json_answer(
        {"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.3]}]}
    )

    result = probe(triton.port, "embedding:e")

    assert (result.returncode, result.stderr) == (0, "")
    _, body = triton.requests[0]
    assert [(i["name"], i["shape"]) for i in body["inputs"]] == [("text_input", [1])]


def image_answer(png: bytes) -> Answer:
    header = json.dumps(
        {"outputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 4}}]}
    ).encode()
    blob = struct.pack("<I", len(png)) + png
    return Answer(body=header + blob, headers={"Inference-Header-Content-Length": str(len(header))})


def test_an_image_model_is_asked_for_the_smallest_image_it_accepts(triton: FakeTriton) -> None:
    triton.answers["/v2/models/flux/infer"] = image_answer(PNG)

    result = probe(triton.port, "image:flux")

    assert (result.returncode, result.stderr) == (0, "")
    _, body = triton.requests[0]
    values = {i["name"]: i["data"][0] for i in body["inputs"]}
    assert (values["width"], values["height"], values["num_inference_steps"]) == (256, 256, 1)


def test_an_image_model_that_answers_without_a_png_fails(triton: FakeTriton) -> None:
    triton.answers["/v2/models/flux/infer"] = image_answer(b"")

    result = probe(triton.port, "image:flux")

    assert result.returncode == 1
    assert "model 'flux' cannot serve: answered without a PNG image" in result.stderr


def test_every_failing_model_gets_its_own_line(triton: FakeTriton) -> None:
    triton.answers["/v2/models/a/generate"] = json_answer({"error": STUB_DEAD}, status=400)
    triton.answers["/v2/models/b/generate"] = CHAT_OK

    result = probe(triton.port, "chat:a", "chat:b", "chat:c")

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line.split(" cannot serve")[0] for line in lines] == ["model 'a'", "model 'c'"]
    assert "HTTP 404: unknown model" in lines[1]


def kubelet_command(tmp_path: Path, port: int, probe_name: str) -> list[str]:
    """What the kubelet runs for the FLUX sample, with the ConfigMap written to a directory, this
    interpreter as the image's python3, and the stand-in's port as Triton's."""
    manifest = load_sample("flux-1-schnell.yaml")
    name = manifest["metadata"]["name"]
    children = render_children(name, "lexora-models", parse_spec(name, copy.deepcopy(manifest["spec"])))
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    for key, text in children.config_map["data"].items():
        (config / key).write_text(text)
    argv = children.deployment["spec"]["template"]["spec"]["containers"][0][probe_name]["exec"]["command"]
    assert argv[0] == "python3" and argv[3].startswith("/etc/lexora/model-repo/")
    options = [f"--port={port}" if arg.startswith("--port=") else arg for arg in argv[4:]]
    return [sys.executable, *argv[1:3], str(config / Path(argv[3]).name), *options]


@pytest.mark.parametrize("probe_name", ["readinessProbe", "livenessProbe"])
def test_the_rendered_probe_command_runs_the_config_map_script(
    triton: FakeTriton, tmp_path: Path, probe_name: str
) -> None:
    triton.answers["/v2/models/flux-1-schnell/infer"] = image_answer(PNG)
    healthy = subprocess.run(kubelet_command(tmp_path, triton.port, probe_name), capture_output=True, text=True)
    assert (healthy.returncode, healthy.stderr) == (0, "")

    triton.answers["/v2/models/flux-1-schnell/infer"] = json_answer({"error": STUB_DEAD}, status=400)
    broken = subprocess.run(kubelet_command(tmp_path, triton.port, probe_name), capture_output=True, text=True)
    assert broken.returncode == 1
    assert broken.stderr.startswith("model 'flux-1-schnell' cannot serve: HTTP 400")
