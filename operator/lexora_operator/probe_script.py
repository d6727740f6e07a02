"""The Triton container's readiness and liveness probe: one real, minimal request to each model.

Triton's own health endpoints do not see a broken engine: when a Python-backend stub process dies
(a SIGSEGV in the engine library), /v2/health/live, /v2/health/ready and /v2/models/<m>/ready all
stay at 200 while every inference on that model is answered with an error such as "Stub process
'<model>_0_0' is not healthy". So this probe asks the model itself, on localhost: a one-token
generation for a chat model, one short input for an embedding model, the smallest image (256x256,
one step) for an image model. It exits 0 when every model answered with the output its kind
promises, and 1 otherwise, with one line per failing model on stderr, which the kubelet shows in
the pod's events ("Readiness probe failed: ...").

An error answer, an answer without the expected output, or no connection fails at once. No answer
within the time allowed is not held against a busy model: if the model completed an inference (a
client's, or an earlier probe's) within --stall-seconds, it is working through a queue rather than
stuck, and the probe passes. Triton's per-model statistics (`last_inference`, set when an inference
succeeds) tell which.

The operator ships this file in the model-repository ConfigMap, mounted into the Triton container,
and the kubelet runs it with the image's python3 (`python3 -I -S`): standard library only, and
Python 3.8 or newer (NVIDIA's Triton images have python3 for the Python backend: 3.8 in the
Ubuntu 20.04 based releases, 3.10 and 3.12 since).

    python3 -I -S probe.py --port 8000 --timeout 3 --stall-seconds 120 chat:lexora-trtllm-chat
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

KINDS = ("chat", "embedding", "image")
PROMPT = "ping"
# Kept back from --timeout for the statistics request that tells a busy model from a stuck one.
STATS_ALLOWANCE_S = 0.5
# The smallest image FLUX-style models accept: sides 256..2048 in multiples of 16, 1..50 steps.
IMAGE_SIDE, IMAGE_STEPS = 256, 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MESSAGE_LIMIT = 300


class Unhealthy(Exception):
    """The model answered, and the answer says it cannot serve."""


def _post(host: str, port: int, path: str, body: dict, timeout: float) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def _refusal(status: int, body: bytes) -> Unhealthy:
    """Triton's error answer (`{"error": "..."}`) as one readable line."""
    try:
        message = str(json.loads(body).get("error") or "")
    except (ValueError, AttributeError):
        message = ""
    return Unhealthy(f"HTTP {status}: {message or body[:200].decode(errors='replace') or 'no body'}")


def _json_answer(status: int, body: bytes) -> dict:
    if status != 200:
        raise _refusal(status, body)
    try:
        values = json.loads(body)
    except ValueError:
        raise Unhealthy(f"unreadable answer: {body[:200]!r}") from None
    if not isinstance(values, dict):
        raise Unhealthy(f"unexpected answer: {body[:200]!r}")
    if "error" in values:
        raise Unhealthy(str(values["error"]))
    return values


def _outputs(values: dict) -> dict[str, dict]:
    return {output.get("name"): output for output in values.get("outputs") or [] if isinstance(output, dict)}


def ask_chat(host: str, port: int, model: str, timeout: float) -> None:
    """One token through Triton's generate extension, as the router's tensors name it."""
    body = {"text_input": PROMPT, "max_tokens": 1, "stream": False, "apply_chat_template": False}
    status, _, raw = _post(host, port, f"/v2/models/{model}/generate", body, timeout)
    values = _json_answer(status, raw)
    # One token may decode to nothing (an end-of-sequence token): the output must be there, not long.
    if "text_output" not in values:
        raise Unhealthy("answered without text_output")


def ask_embedding(host: str, port: int, model: str, timeout: float) -> None:
    body = {
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [PROMPT]}],
        "outputs": [{"name": "embedding"}],
    }
    status, _, raw = _post(host, port, f"/v2/models/{model}/infer", body, timeout)
    values = _json_answer(status, raw)
    if not (_outputs(values).get("embedding") or {}).get("data"):
        raise Unhealthy("answered without an embedding")


def ask_image(host: str, port: int, model: str, timeout: float) -> None:
    def scalar(name: str, datatype: str, value: object) -> dict:
        return {"name": name, "datatype": datatype, "shape": [1], "data": [value]}

    body = {
        "inputs": [
            scalar("prompt", "BYTES", PROMPT),
            scalar("width", "INT32", IMAGE_SIDE),
            scalar("height", "INT32", IMAGE_SIDE),
            scalar("num_inference_steps", "INT32", IMAGE_STEPS),
            scalar("guidance_scale", "FP32", 0.0),
        ],
        # The PNG comes back as binary tensor data, after the JSON header (binary tensor data extension).
        "outputs": [{"name": "image", "parameters": {"binary_data": True}}],
    }
    status, headers, raw = _post(host, port, f"/v2/models/{model}/infer", body, timeout)
    split = int(headers.get("inference-header-content-length") or len(raw)) if status == 200 else len(raw)
    _json_answer(status, raw[:split])
    blob = raw[split:]
    # A BYTES tensor's binary form: each element as a 4-byte little-endian length, then its bytes.
    size = struct.unpack("<I", blob[:4])[0] if len(blob) >= 4 else 0
    if size == 0 or not blob[4 : 4 + size].startswith(PNG_SIGNATURE):
        raise Unhealthy("answered without a PNG image")


ASK = {"chat": ask_chat, "embedding": ask_embedding, "image": ask_image}


def last_inference_age(host: str, port: int, model: str, timeout: float) -> float | None:
    """Seconds since the model last completed an inference successfully; None if it never did
    (or the statistics cannot be read)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", f"/v2/models/{model}/stats")
        response = connection.getresponse()
        if response.status != 200:
            return None
        stats = json.loads(response.read()).get("model_stats") or []
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return None
    finally:
        connection.close()
    last_ms = max((int(version.get("last_inference") or 0) for version in stats), default=0)
    return None if last_ms <= 0 else max(0.0, time.time() - last_ms / 1000)


def check(kind: str, model: str, host: str, port: int, deadline: float, stall_s: float) -> str | None:
    """Why `model` cannot serve, or None when it can (or is busy serving others)."""
    wait = max(0.1, deadline - time.monotonic() - STATS_ALLOWANCE_S)
    try:
        ASK[kind](host, port, model, wait)
        return None
    # socket.timeout: TimeoutError only from Python 3.10 on.
    except (TimeoutError, socket.timeout):  # noqa: UP041
        age = last_inference_age(host, port, model, max(0.1, deadline - time.monotonic()))
        if age is not None and age <= stall_s:
            print(f"model {model!r} is busy: no answer within {wait:.1f}s, last inference {age:.0f}s ago")
            return None
        done = "has never completed an inference" if age is None else f"completed no inference for {age:.0f}s"
        return f"no answer within {wait:.1f}s, and the model {done}"
    except Unhealthy as exc:
        return str(exc)
    except (OSError, http.client.HTTPException) as exc:
        return f"cannot reach Triton at {host}:{port}: {type(exc).__name__}: {exc}"


def _target(value: str) -> tuple[str, str]:
    kind, _, model = value.partition(":")
    if kind not in KINDS or not model:
        raise argparse.ArgumentTypeError(f"expected KIND:MODEL with KIND one of {', '.join(KINDS)}, got {value!r}")
    return kind, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when every model answers a minimal request.")
    parser.add_argument("models", nargs="+", type=_target, metavar="KIND:MODEL", help="e.g. chat:lexora-trtllm-chat")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="Triton's HTTP port")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds for the whole probe")
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=120.0,
        help="a model that does not answer in time still passes "
        "if it completed an inference this recently (it is busy, not stuck)",
    )
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    # Concurrently: every model gets the whole time allowed.
    with ThreadPoolExecutor(max_workers=len(args.models)) as pool:
        reasons = list(
            pool.map(lambda target: check(*target, args.host, args.port, deadline, args.stall_seconds), args.models)
        )
    failed = False
    for (_, model), reason in zip(args.models, reasons):  # noqa: B905 (strict=: Python 3.10)
        if reason is not None:
            failed = True
            line = " ".join(f"model {model!r} cannot serve: {reason}".split())
            print(line[:MESSAGE_LIMIT], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
