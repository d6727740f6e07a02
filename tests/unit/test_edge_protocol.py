"""Slow and oversized clients at the edge, on a real uvicorn server with the gateway's protocol and
body middleware, spoken to over raw sockets (a slow client is one no HTTP library imitates)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lexora_dev.processes import free_port
from lexora_gateway.errors import install_error_handlers
from lexora_gateway.metrics_middleware import BodyLimit
from lexora_gateway.platform import edge_protocol
from lexora_gateway.platform.edge_protocol import EdgeHttpProtocol

MAX_HEADER_BYTES = 2048
TIMEOUT_S = 0.5


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"data": []})

    @app.post("/v1/{route:path}")
    async def echo(request: Request, route: str) -> JSONResponse:
        body = await request.body()
        await asyncio.sleep(2 * TIMEOUT_S)  # a slow route is not a slow client
        return JSONResponse({"route": route, "bytes": len(body)})

    app.add_middleware(BodyLimit, limit=lambda: 1 << 20, idle_timeout_s=TIMEOUT_S)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    patch = pytest.MonkeyPatch()
    patch.setenv("LEXORA_MAX_HEADER_BYTES", str(MAX_HEADER_BYTES))
    patch.setenv("LEXORA_HEADER_TIMEOUT_S", str(TIMEOUT_S))
    edge_protocol._limits.cache_clear()
    port = free_port()
    config = uvicorn.Config(_app(), host="127.0.0.1", port=port, http=EdgeHttpProtocol, log_config=None)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    running.should_exit = True
    thread.join(5)
    patch.undo()
    edge_protocol._limits.cache_clear()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a timeout here fails the test)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _status_and_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """One response on a connection that stays open (Content-Length framed)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_ordinary_requests_share_a_kept_alive_connection(server: int) -> None:
    with _connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock) == (200, {"data": []})


def test_headers_larger_than_the_limit_get_431_in_the_openai_envelope(server: int) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n")
        status, body = _status_and_body(_read_all(sock))
    assert status == 431
    assert body["error"]["code"] == "request_header_fields_too_large"
    assert f"{MAX_HEADER_BYTES:,} bytes" in body["error"]["message"]


def test_many_small_headers_count_together_and_anthropic_routes_get_their_envelope(server: int) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(60))  # ~3 KiB in 60 lines
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, body = _status_and_body(_read_all(sock))
    assert status == 431
    assert body == {"type": "error", "error": {"type": "request_too_large", "message": body["error"]["message"]}}


def test_headers_trickled_past_the_deadline_get_408_and_the_connection_closes(server: int) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
        while time.monotonic() - started < 2 * TIMEOUT_S:  # a header line at a time, never the end
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break  # refused and closed
            time.sleep(TIMEOUT_S / 5)
        status, body = _status_and_body(_read_all(sock))
    assert status == 408
    assert body["error"]["code"] == "request_timeout"


def test_a_connection_that_never_begins_a_request_is_closed_without_an_answer(server: int) -> None:
    with _connect(server) as sock:
        assert _read_all(sock) == b""


def test_a_stalled_body_gets_408_while_a_slow_route_does_not(server: int) -> None:
    with _connect(server) as sock:
        sock.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"a"')
        status, body = _status_and_body(_read_all(sock))
    assert status == 408, body
    assert "stopped arriving" in body["error"]["message"]
    # The whole body in time, then a route slower than the body timeout: answered normally, and the
    # wait for a disconnect that follows a complete body is never cut.
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert _read_response(sock) == (200, {"route": "chat/completions", "bytes": 2})
