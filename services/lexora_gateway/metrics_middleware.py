"""The edge middleware (plain ASGI, cheap): request counts and latencies per route and status, and
the X-RateLimit-* headers the rate limiter decided, on every response that carries them."""

from __future__ import annotations

import time
from typing import Any

from lexora_gateway.admission.rate_limits import SCOPE_KEY
from lexora_runtime.metrics import ServiceMetrics


class MetricsMiddleware:
    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_recording_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                rate_headers = scope.get(SCOPE_KEY)
                if rate_headers:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((name.lower().encode(), value.encode()) for name, value in rate_headers.items()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            path = scope["path"].removeprefix("/api")
            self.metrics.requests.labels("gateway", path, str(status["code"])).inc()
            self.metrics.latency.labels("gateway", path).observe(time.perf_counter() - started)
