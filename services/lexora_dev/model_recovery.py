"""Brings back a model whose engine died, on the local stack's tritonserver, without a human.

On Kubernetes the kubelet does this: the Triton pod's liveness probe sends each model one minimal
request (`lexora_operator.probe_script`) and the pod is restarted when it fails
(docs/operator.md). Locally one tritonserver serves every model, and restarting it would take
them all down, so this process plays the kubelet with the same probe, per model: every
`--period-s` (5 s) it asks each model that served nothing since the last look for one token (one
embedding, the smallest image: the probe the kubelet runs), and after
`--failures` failed probes in a row it reloads that model through Triton's repository API: an
`unload`, then a `load` (Triton runs in explicit model-control mode; a `load` of a loaded model
changes nothing, even when its Python-backend stub is dead). A model is reloaded at most once per
cool-down (15 s). The routers' own probes then see it serve and mark it healthy again.

One process per tritonserver: two reloading the same model at once would undo each other.

    python -m lexora_dev.model_recovery --triton-http 127.0.0.1:8000 chat:smollm2-135m-instruct ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import httpx

from lexora_operator.probe_script import KINDS, check, last_inference_age
from lexora_runtime.logs import configure_logging

log = logging.getLogger("lexora.model_recovery")

UNLOAD_WAIT_S = 60.0
LOAD_TIMEOUT_S = 300.0  # a large model's load
STALL_S = 120.0  # no answer in time is still fine if the model completed an inference this recently
PROBE_WAIT_S = 10.0


class TritonRepository:
    """Triton's model-repository API on one server (explicit model-control mode)."""

    def __init__(self, http_address: str):
        self._base = f"http://{http_address}/v2"

    async def reload(self, model: str) -> None:
        async with httpx.AsyncClient(timeout=LOAD_TIMEOUT_S) as client:
            response = await client.post(f"{self._base}/repository/models/{model}/unload")
            response.raise_for_status()
            # The unload finishes in the background; a load before then is taken as a no-op.
            deadline = time.monotonic() + UNLOAD_WAIT_S
            while time.monotonic() < deadline:
                if (await client.get(f"{self._base}/models/{model}/ready")).status_code != 200:
                    break
                await asyncio.sleep(0.1)
            response = await client.post(f"{self._base}/repository/models/{model}/load")
            if response.status_code != 200:
                raise RuntimeError(f"load of {model} failed: HTTP {response.status_code} {response.text[:300]}")


@dataclass
class Watched:
    kind: str
    model: str  # the Triton model name
    failures: int = 0
    reloaded_at: float = float("-inf")


class ModelRecovery:
    def __init__(
        self, http_address: str, targets: list[tuple[str, str]], period_s: float, failures: int, cooldown_s: float
    ):
        self._host, _, port = http_address.rpartition(":")
        self._port = int(port)
        self._repository = TritonRepository(http_address)
        self._watched = [Watched(kind, model) for kind, model in targets]
        self._period_s = period_s
        self._failures = failures
        self._cooldown_s = cooldown_s

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.gather(*(self._look_after(watched) for watched in self._watched))
            await asyncio.sleep(max(0.0, self._period_s - (time.monotonic() - started)))

    async def _look_after(self, watched: Watched) -> None:
        if time.monotonic() - watched.reloaded_at < self._cooldown_s:
            return
        # A model that completed an inference since the last look served it: no probe needed. Failed
        # requests do not count (Triton's statistics), so a dead engine is always probed.
        age = await asyncio.to_thread(last_inference_age, self._host, self._port, watched.model, PROBE_WAIT_S)
        if age is not None and age <= self._period_s:
            watched.failures = 0
            return
        deadline = time.monotonic() + PROBE_WAIT_S
        reason = await asyncio.to_thread(check, watched.kind, watched.model, self._host, self._port, deadline, STALL_S)
        if reason is None:
            watched.failures = 0
            return
        watched.failures += 1
        log.warning(
            "model failed its probe",
            extra={"fields": {"model": watched.model, "failures": watched.failures, "reason": reason}},
        )
        if watched.failures < self._failures:
            return
        watched.failures, watched.reloaded_at = 0, time.monotonic()
        log.warning("reloading the model", extra={"fields": {"model": watched.model}})
        try:
            await self._repository.reload(watched.model)
        except Exception as exc:
            log.error("reload failed", extra={"fields": {"model": watched.model, "error": str(exc)}})
            return
        seconds = round(time.monotonic() - watched.reloaded_at, 2)
        log.info("model reloaded", extra={"fields": {"model": watched.model, "seconds": seconds}})


def _target(value: str) -> tuple[str, str]:
    kind, _, model = value.partition(":")
    if kind not in KINDS or not model:
        raise argparse.ArgumentTypeError(f"expected KIND:MODEL with KIND one of {', '.join(KINDS)}, got {value!r}")
    return kind, model


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("targets", nargs="+", type=_target, metavar="KIND:MODEL", help="e.g. chat:smollm2")
    parser.add_argument("--triton-http", required=True, help="host:port of the local tritonserver's HTTP API")
    # A model that served a request within the period is not probed (Triton's statistics say so), so
    # only idle models cost a probe, a small one; the routers see a failure sooner anyway.
    parser.add_argument("--period-s", type=float, default=5.0, help="how often each model is looked at")
    parser.add_argument("--failures", type=int, default=2, help="failed probes in a row before a reload")
    parser.add_argument("--cooldown-s", type=float, default=15.0, help="least time between two reloads of a model")
    args = parser.parse_args()
    configure_logging("model-recovery", "INFO")
    recovery = ModelRecovery(args.triton_http, args.targets, args.period_s, args.failures, args.cooldown_s)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(recovery.run())


if __name__ == "__main__":
    main()
