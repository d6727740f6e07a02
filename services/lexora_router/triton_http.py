"""Requests to one Triton endpoint over HTTP: `generate_stream` (Triton's generate extension, SSE)
for a streaming client, `generate` (one JSON answer) for a short single answer.

The router sends those here when the endpoint publishes an HTTP address
(lexora_router.triton_engine). Measured against a gRPC call of its own (one client, 16 tokens, the
instant-echo model): the router spends 1.3-1.4 ms of CPU instead of 4.0-4.5, Triton 4.2-4.8 ms
instead of 5.5-6.7, and the whole stream takes 3.9-4.6 ms instead of 6.6-8.0. A single answer
costs the router less here too than on the endpoint's shared gRPC call (`python -m bench cpu`;
docs/benchmarks.md), and one request given up never disturbs the others.

Each request is one HTTP request on a kept-alive connection. When the caller stops reading (the
client left, the deadline passed), the connection is closed instead of returned to the pool, and
Triton cancels the request: the model sees `is_cancelled()` (checked on tritonserver 2.51).

The generate extension takes each input tensor as a JSON value under its name, adding the batch
dimension itself for a model that batches (TensorRT-LLM's), and sends each response's outputs as
a JSON object; an error is an `{"error": ...}` object, as the body or as an event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from lexora_router.triton_wire import Tensors
from lexora_runtime import tracing

CONNECT_TIMEOUT_S = 10.0
_DATA = b"data:"


class HttpEngineError(Exception):
    """Triton answered with an error, or the connection failed. `unreachable`: the endpoint failed
    (down, gone, or not serving the model), not the request; before any output, another endpoint
    may try it. `status`: the HTTP status Triton answered with, when it refused the request whole."""

    def __init__(self, message: str, *, unreachable: bool, status: int | None = None):
        super().__init__(message)
        self.unreachable = unreachable
        self.status = status


def generate_body(tensors: Tensors) -> bytes:
    """The JSON body of a generate request: each tensor's value, a scalar for one element."""
    body: dict[str, Any] = {}
    for name, datatype, value in tensors:
        items = [_json_value(datatype, element) for element in value.reshape(-1)]
        body[name] = items[0] if value.shape == (1,) else items
    return orjson.dumps(body)


def _json_value(datatype: str, element: Any) -> Any:
    if datatype == "BYTES":
        return element.decode() if isinstance(element, bytes) else str(element)
    if datatype == "BOOL":
        return bool(element)
    if datatype.startswith(("INT", "UINT")):
        return int(element)
    return float(element)


def event_values(line: bytes) -> dict[str, Any] | None:
    """The outputs of one SSE line (`data: {...}`); None for any other line."""
    if not line.startswith(_DATA):
        return None
    return response_values(line[len(_DATA) :], "event")


def response_values(body: bytes, what: str = "answer") -> dict[str, Any]:
    """The outputs of one response (a JSON object), or the error it carries as HttpEngineError."""
    try:
        values = orjson.loads(body)
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        raise HttpEngineError(f"unexpected {what} from the engine: {body[:200]!r}", unreachable=False, status=502)
    if "error" in values:
        raise HttpEngineError(str(values["error"]), unreachable=False)
    return values


def first_value(values: dict[str, Any], name: str) -> Any:
    """An output's first element (a batched model's outputs may come as a list)."""
    value = values.get(name)
    while isinstance(value, list):
        value = value[0] if value else None
    return value


def refusal_error(status: int, body: bytes) -> HttpEngineError:
    """A generate request refused before any event: 404 (model not served here) and 503 (not ready)
    leave the request to another endpoint; anything else is the request's own error."""
    try:
        message = str(orjson.loads(body.removeprefix(_DATA).strip()).get("error") or "")
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    message = message or body.decode(errors="replace")[:500] or f"HTTP {status}"
    return HttpEngineError(message, unreachable=status in (404, 503) or "unknown model" in message, status=status)


class HttpStreams:
    """Kept-alive HTTP connections to one endpoint (a session opened on first use)."""

    def __init__(self, address: str):
        self._base = f"http://{address}/v2/models/"
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # one connection per request in flight
                # No total: generation takes as long as it takes; the job's deadline stops it.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def generate(self, model: str, tensors: Tensors) -> dict[str, Any]:
        """The one response's outputs. Raises HttpEngineError."""
        url = f"{self._base}{model}/generate"
        headers = tracing.headers_with_context({"Content-Type": "application/json"})
        try:
            async with self._open().post(url, data=generate_body(tensors), headers=headers) as response:
                body = await response.read()
        except aiohttp.ClientError as exc:
            raise HttpEngineError(f"{type(exc).__name__}: {exc}", unreachable=True) from exc
        if response.status != 200:
            raise refusal_error(response.status, body)
        return response_values(body)

    async def generate_stream(self, model: str, tensors: Tensors) -> AsyncIterator[dict[str, Any]]:
        """Each response's outputs, to the last. Raises HttpEngineError."""
        url = f"{self._base}{model}/generate_stream"
        # Triton traced with --trace-config mode=opentelemetry continues the caller's trace.
        headers = tracing.headers_with_context({"Content-Type": "application/json"})
        try:
            response = await self._open().post(url, data=generate_body(tensors), headers=headers)
        except aiohttp.ClientError as exc:
            raise HttpEngineError(f"{type(exc).__name__}: {exc}", unreachable=True) from exc
        finished = False
        try:
            if response.status != 200:
                raise refusal_error(response.status, await response.read())
            async for line in response.content:
                values = event_values(line)
                if values is not None:
                    yield values
            finished = True
        except aiohttp.ClientError as exc:
            raise HttpEngineError(f"the engine closed the stream ({type(exc).__name__})", unreachable=True) from exc
        except ValueError as exc:  # a line over aiohttp's 128 KiB
            raise HttpEngineError(f"unreadable event from the engine: {exc}", unreachable=False, status=502) from exc
        finally:
            if finished:
                response.release()  # read to its end: the connection goes back to the pool
            else:
                response.close()  # closing the connection is what tells Triton to cancel

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
