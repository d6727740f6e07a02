"""The gateway's edge middleware on a bare app: bodies over the limit are 413 in the route's own
envelope, and requests are labelled by route template."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lexora_gateway.errors import install_error_handlers
from lexora_gateway.metrics_middleware import BodyLimit, MetricsMiddleware
from lexora_runtime.metrics import create_metrics

LIMIT = 1000


def app_with_edge() -> tuple[FastAPI, object]:
    app = FastAPI()
    install_error_handlers(app)
    metrics = create_metrics("gateway")

    @app.post("/v1/chat/completions")
    @app.post("/v1/messages")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> JSONResponse:
        return JSONResponse({"id": model_id})

    app.add_middleware(BodyLimit, limit=lambda: LIMIT, idle_timeout_s=30)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app, metrics


async def test_bodies_over_the_limit_are_413_in_the_routes_envelope() -> None:
    app, _ = app_with_edge()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/v1/chat/completions", content=b"x" * LIMIT)).json() == {"size": LIMIT}
        declared = await client.post("/v1/chat/completions", content=b"x" * (LIMIT + 1))
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"

        async def chunks():  # no Content-Length: counted as it is read
            for _ in range(3):
                yield b"x" * 600

        streamed = await client.post("/v1/messages", content=chunks())
        assert streamed.status_code == 413
        assert streamed.json() == {
            "type": "error",
            "error": {"type": "request_too_large", "message": streamed.json()["error"]["message"]},
        }


async def test_requests_are_labelled_by_route_template() -> None:
    """On the real app: its routers are included under /v1 and /api/v1."""
    from types import SimpleNamespace

    from lexora_gateway.app import create_app
    from lexora_gateway.settings import GatewaySettings

    app = create_app(GatewaySettings())
    registry = SimpleNamespace(get=lambda name: None)
    app.state.gateway = SimpleNamespace(
        settings=GatewaySettings(), registry=registry, nc=SimpleNamespace(max_payload=LIMIT)
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for n in range(3):
            await client.get(f"/v1/models/m-{n}")
            await client.get(f"/api/v1/models/m-{n}")
            await client.get(f"/nowhere-{n}")
        exposed = (await client.get("/metrics")).text
    labels = set(re.findall(r'lexora_requests_total\{operation="([^"]+)"', exposed))
    assert labels == {"/v1/models/{model_id:path}", "unmatched"}
