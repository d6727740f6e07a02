"""A real HTTPS server on 127.0.0.1 for the image-fetching tests: a test CA (trustme), a certificate
for made-up names, and paths that misbehave on purpose (huge, slow, redirecting, not an image).
It records what reached it: connections, TLS SNI names, Host headers, bytes sent before a client
hung up."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import trustme

from support.images import png

NAMES = ("images.test", "other.test", "127.0.0.1")
PNG = png()


@dataclass
class Seen:
    connections: int = 0
    sni: list[str | None] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    endless_sent: int | None = None  # bytes /endless wrote before the client hung up


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: Seen

    def get_request(self):  # type: ignore[no-untyped-def]
        request = super().get_request()  # TCP only: the TLS handshake happens in the handler's thread
        self.seen.connections += 1
        return request

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        pass  # a client that refused the certificate or hung up: expected in these tests


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "image/png", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        seen = self.server.seen
        seen.hosts.append(self.headers.get("Host", ""))
        url = urlsplit(self.path)
        seen.paths.append(url.path)
        query = parse_qs(url.query)
        if url.path == "/png":
            self._send(200, PNG)
        elif url.path == "/png-as-text":
            self._send(200, PNG, "text/plain")
        elif url.path == "/html-as-png":
            self._send(200, b"<!doctype html><html><body>not an image</body></html>", "image/png")
        elif url.path == "/gzip":
            self._send(200, PNG, Content_Encoding="gzip")
        elif url.path == "/honest-big":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(100 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(PNG)
        elif url.path == "/truncated":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG) + 1000))
            self.end_headers()
            self.wfile.write(PNG)
            self.close_connection = True
        elif url.path == "/endless":
            self._endless()
        elif url.path == "/slow-headers":
            time.sleep(float(query.get("s", ["3"])[0]))
            self._send(200, PNG)
        elif url.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                self.wfile.write(PNG[:16])
                for _ in range(100):
                    time.sleep(0.1)
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
            except OSError:
                pass
        elif url.path.startswith("/redirect/"):
            left = int(url.path.rsplit("/", 1)[1])  # /redirect/N: N redirects, then the PNG
            location = f"/redirect/{left - 1}" if left > 1 else "/png"
            self._send(302, b"", "text/plain", Location=location)
        elif url.path == "/to":
            self._send(302, b"", "text/plain", Location=query["u"][0])
        elif url.path.startswith("/status/"):
            self._send(int(url.path.rsplit("/", 1)[1]), b"no", "text/plain")
        else:
            self._send(404, b"no such path", "text/plain")

    def _endless(self) -> None:
        """An image with no Content-Length that goes on for 64 MiB unless the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        block = b"\x00" * 65536
        try:
            self.wfile.write(PNG[:16])
            sent = 16
            while sent < 64 * 1024 * 1024:
                self.wfile.write(block)
                sent += len(block)
        except OSError:
            pass
        self.server.seen.endless_sent = sent


@dataclass
class HttpsServer:
    port: int
    seen: Seen
    client_tls: ssl.SSLContext  # trusts the test CA only

    def url(self, path: str, host: str = "images.test") -> str:
        return f"https://{host}:{self.port}{path}"


@contextmanager
def https_server() -> Iterator[HttpsServer]:
    ca = trustme.CA()
    cert = ca.issue_cert(*NAMES)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_tls)
    seen = Seen()

    def on_sni(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        seen.sni.append(name)

    server_tls.sni_callback = on_sni  # type: ignore[assignment]
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen = seen
    server.socket = server_tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    try:
        yield HttpsServer(server.server_address[1], seen, client_tls)
    finally:
        server.shutdown()
        server.server_close()
