"""The HTTP/1.1 connection as a public edge must read it: uvicorn's httptools protocol, plus a bound
on the request line and headers and a deadline for them.

uvicorn reads headers of any size, for as long as a client cares to send them: a client trickling
one header byte at a time (slowloris) holds a connection, and its memory, forever. Here:

- the request line and headers together may take `max_header_bytes` (431 above it);
- they must all arrive within `header_timeout_s` of the connection's opening or of the request's
  first byte (408), so no client holds a connection by sending slowly.

Both answers are in the route's error envelope (Anthropic's on its routes), and close the connection.
A body that stalls is the ASGI layer's business (`body_timeouts`): there, only while a route is
actually waiting for it.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lexora_contracts.errors import HeadersTooLarge, LexoraError, RequestTimeout
from lexora_gateway.errors import anthropic_error_body, openai_error_body, speaks_anthropic
from lexora_gateway.settings import GatewaySettings

# What each header line adds on the wire beyond its name and value (": " and CRLF).
HEADER_LINE_OVERHEAD = 4
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@functools.cache
def _limits() -> tuple[int, float]:
    """Read once per process (uvicorn's worker processes each read the environment)."""
    settings = GatewaySettings()
    return settings.max_header_bytes, settings.header_timeout_s


class EdgeHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes, self.header_timeout_s = _limits()
        self._header_bytes = 0
        self._headers_deadline: asyncio.TimerHandle | None = None
        self._refusal: LexoraError | None = None
        self._path = b""

    # -- the header deadline ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_headers_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_headers_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._path = b""
        self._arm_headers_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_headers_deadline()
        super().on_headers_complete()

    def _arm_headers_deadline(self) -> None:
        if self._headers_deadline is None:
            self._headers_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_headers_deadline(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        if self.transport.is_closing():
            return
        if self._header_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # an idle connection that never began a request: nothing to answer
            return
        self._refuse(RequestTimeout(f"The request's headers did not arrive within {self.header_timeout_s:g} seconds"))

    # -- the header size ------------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self._path += url
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + HEADER_LINE_OVERHEAD)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes and self._refusal is None:
            self._refusal = HeadersTooLarge(
                f"The request line and headers are larger than the {self.max_header_bytes:,} bytes this gateway reads"
            )
            # Raised inside the parser's callback: httptools stops and uvicorn answers the parse
            # error through send_400_response, which answers this refusal instead.
            raise self._refusal

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    # -- answering -------------------------------------------------------------------------------------

    def _refuse(self, error: LexoraError) -> None:
        self._disarm_headers_deadline()
        path = self._path.split(b"?", 1)[0].decode("latin-1")
        body = anthropic_error_body(error) if speaks_anthropic(path) else openai_error_body(error)
        content = json.dumps(body).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (error.status, _REASONS[error.status])]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(content),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + content)
        self.transport.close()
