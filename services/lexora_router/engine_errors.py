"""What an error from Triton means: the request's own fault, or an engine that cannot serve.

Triton's status codes cannot be trusted for this on their own: when a Python-backend stub dies,
Triton 2.51 answers every request to that model with HTTP 400 "Stub process '<model>_0_0' is not
healthy" and keeps the model READY; over gRPC streaming an error is a bare message with no code
at all. So the message is read first, then the code:

- the engine failing: the stub is not healthy or crashed, the backend could not run the request
  ("Failed to process the request", our models' "generation failed: ..."), INTERNAL, UNAVAILABLE,
  UNKNOWN, an HTTP 5xx, or the stream cut before its final response. A server error (502/503),
  never charged; the endpoint is marked unhealthy and, before any output, another one is tried.
- otherwise the request's own fault (a validation message, INVALID_ARG): a 400 with the model's
  words, and the endpoint stays healthy.
"""

from __future__ import annotations

import enum
import re

# Messages that mean the engine (not the request) failed, whatever code came with them.
_ENGINE_FAILURE = re.compile(
    r"stub process|is not healthy|stub .*(?:died|crash|terminat|exit)|failed to process the request"
    r"|(?:generation|embedding|image generation) failed:|segmentation fault|core dumped|cuda error"
    r"|out of memory|backend .*(?:crash|died)|connection (?:reset|refused|closed)|socket closed",
    re.IGNORECASE,
)
# gRPC status names and HTTP statuses that are the server's side.
_ENGINE_STATUSES = {"INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS", "ABORTED"}


class Fault(enum.Enum):
    REQUEST = "request"  # the request's own fault: 400, the endpoint is fine
    ENGINE = "engine"  # the engine cannot serve: 502/503, mark the endpoint, try another


def classify(message: str, status: str | int | None = None) -> Fault:
    """Whose fault an engine error is, from its message and, when there is one, its gRPC status
    name (e.g. "INTERNAL", "StatusCode.INTERNAL") or HTTP status (e.g. 500)."""
    if _ENGINE_FAILURE.search(message or ""):
        return Fault.ENGINE
    if isinstance(status, int):
        return Fault.ENGINE if status >= 500 else Fault.REQUEST
    if status and str(status).rpartition(".")[2].upper() in _ENGINE_STATUSES:
        return Fault.ENGINE
    return Fault.REQUEST
