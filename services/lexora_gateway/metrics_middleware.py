"""The edge middleware (plain ASGI, cheap): request counts and latencies per route and status, the
X-RateLimit-* headers on every authenticated response (those the rate limiter decided, else the
caller's current standing), and the limits on request bodies: their size and how long they may stall."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from lexora_contracts.errors import PayloadTooLarge, RequestTimeout
from lexora_gateway.admission.identity import IDENTITY_SCOPE_KEY
from lexora_gateway.admission.rate_limits import SCOPE_KEY, peek_headers
from lexora_gateway.errors import error_response, speaks_anthropic
from lexora_runtime import tracing
from lexora_runtime.metrics import ServiceMetrics

# The label of requests no route matched: one series however many unknown paths are tried.
UNMATCHED = "unmatched"
# A client's trace context, which the request's span continues.
_TRACE_HEADERS = (b"traceparent", b"tracestate")
# Probes and scrapes, every few seconds from each kubelet and Prometheus: no trace of their own.
UNTRACED_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


def route_label(scope: dict[str, Any]) -> str:
    """The matched route's template (`/v1/models/{model_id:path}`), never the raw path, so a client
    cannot mint a metric series per URL; `/api/v1/…` counts as `/v1/…`."""
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    template = template.removeprefix("/api")
    # The API's routers are included under /v1 and /api/v1; the route in the scope is the router's
    # own, whose template lacks that prefix.
    if scope["path"].removeprefix("/api").startswith("/v1/") and not template.startswith("/v1/"):
        template = "/v1" + template
    return template


class MetricsMiddleware:
    """Counts each request, and traces it when tracing is on (lexora_runtime.tracing)."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif tracing.tracing_on() and scope["path"] not in UNTRACED_PATHS:
            await self._traced(scope, receive, send)
        else:
            await self._counted(scope, receive, send)

    async def _traced(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The request in a SERVER span, the root of its trace (or a child of the client's, when it
        sent a `traceparent`); the routes add the GenAI attributes (lexora_gateway.dispatch)."""
        method = scope["method"]
        incoming = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers") or ()
            if name in _TRACE_HEADERS
        }
        attributes = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        with tracing.span(method, tracing.SpanKind.SERVER, incoming, attributes) as span:
            status = await self._counted(scope, receive, send)
            route = route_label(scope)
            if route != UNMATCHED:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                tracing.mark_failed(span, f"HTTP {status}")

    async def _counted(self, scope: dict[str, Any], receive: Any, send: Any) -> int:
        """Serve the request, counting it and its latency; returns the status it was answered with."""
        started = time.perf_counter()
        status = {"code": 500}

        async def send_recording_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                rate_headers = scope.get(SCOPE_KEY)
                if rate_headers is None and IDENTITY_SCOPE_KEY in scope:
                    rate_headers = await _peeked_headers(scope)
                if rate_headers:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((name.lower().encode(), value.encode()) for name, value in rate_headers.items()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            path = route_label(scope)
            self.metrics.requests.labels("gateway", path, str(status["code"])).inc()
            self.metrics.latency.labels("gateway", path).observe(time.perf_counter() - started)
        return status["code"]


async def _peeked_headers(scope: dict[str, Any]) -> dict[str, str] | None:
    """The rate-limit headers of an authenticated request that counted nothing (an account route, a
    refused body): every authenticated response carries them. None if the counters cannot be read;
    the response goes out without them rather than failing."""
    try:
        return await peek_headers(scope["app"].state.gateway, scope[IDENTITY_SCOPE_KEY])
    except Exception:
        return None


class BodyLimit:
    """Refuses a request body larger than `limit()` bytes with a 413 in the route's protocol envelope,
    before any key is checked or credit held: at once when Content-Length says so, otherwise as soon
    as the bytes read pass it (the route's body read raises, and the error handlers render it).

    A body that stops arriving for `idle_timeout_s` while the route waits for it is answered 408 the
    same way: a slow client cannot hold a request (and its connection) open by trickling its body."""

    def __init__(self, app: Any, limit: Callable[[], int], idle_timeout_s: float):
        self.app = app
        self.limit = limit
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(_too_large(limit), speaks_anthropic(scope["path"]))
            await response(scope, receive, send)
            return
        seen = 0
        complete = False

        async def guarded_receive() -> dict[str, Any]:
            nonlocal seen, complete
            if complete:  # the body is read: what follows is waiting for a disconnect, for as long as it takes
                return await receive()
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(f"The request body stopped arriving for {self.idle_timeout_s:g} seconds") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, guarded_receive, send)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the {limit:,} bytes this gateway accepts")
