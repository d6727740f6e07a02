"""gateway wiring: settings, NATS, the registry view, routes under /v1 and /api/v1, /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from nats.aio.msg import Msg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lexora_auth.client import AuthClient
from lexora_billing.client import BillingClient
from lexora_console.pages import ConsoleConfig, create_router
from lexora_contracts import subjects
from lexora_contracts.messages import KeyRevoked
from lexora_gateway.account.admin_api import router as admin_routes
from lexora_gateway.account.console_api import router as console_api_routes
from lexora_gateway.account.oidc import router as oidc_routes
from lexora_gateway.account.routes import router as account_routes
from lexora_gateway.account.topups import router as topup_routes
from lexora_gateway.admission.counters import CounterStore, limits_bucket
from lexora_gateway.admission.credit_leases import CreditLeases
from lexora_gateway.admission.key_cache import KeyCache
from lexora_gateway.admission.key_verifier import KeyVerifier
from lexora_gateway.anthropic.routes import router as anthropic_routes
from lexora_gateway.errors import install_error_handlers
from lexora_gateway.http import JSONBody
from lexora_gateway.media.routes import router as media_routes
from lexora_gateway.metrics_middleware import BodyLimit, MetricsMiddleware
from lexora_gateway.openai.responses import router as responses_routes
from lexora_gateway.openai.responses_store import ResponseStore, responses_bucket
from lexora_gateway.openai.routes import router as openai_routes
from lexora_gateway.openapi import install_openapi
from lexora_gateway.platform.edge_protocol import EdgeHttpProtocol
from lexora_gateway.platform.routes import router as platform_routes
from lexora_gateway.settings import GatewaySettings
from lexora_gateway.state import GatewayState
from lexora_router.client import JobInboxes, RouterClient
from lexora_runtime.bus import ensure_usage_stream
from lexora_runtime.logs import configure_logging
from lexora_runtime.loop import freeze_startup_heap
from lexora_runtime.metrics import create_metrics
from lexora_runtime.model_registry import ModelRegistryView
from lexora_runtime.service import connect_with_patience
from lexora_runtime.tracing import set_tracer_provider_from_env
from lexora_usage.client import UsageClient

# Beyond the largest image a body may carry: the rest of the request.
REQUEST_ROOM_BYTES = 1024 * 1024
NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    metrics = create_metrics("gateway")
    # Here, not in main(): with several workers each process makes its own app (and exporter thread).
    tracer_provider = set_tracer_provider_from_env("gateway")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect_with_patience(settings.nats_url, "lexora-gateway", settings.nats_access)
        js = nc.jetstream()
        await ensure_usage_stream(js)
        registry = ModelRegistryView()
        await registry.start(js)
        auth = AuthClient(nc)
        keys = KeyVerifier(KeyCache(settings.auth_cache_ttl_s), auth.verify_key)

        async def on_revoked(msg: Msg) -> None:
            keys.revoke(KeyRevoked.model_validate_json(msg.data).key_id)

        await nc.subscribe(subjects.AUTH_KEY_REVOKED, cb=on_revoked)
        counters = CounterStore(await limits_bucket(js))
        inboxes = JobInboxes(nc)
        await inboxes.start()
        billing = BillingClient(nc)
        clients = (auth, billing, UsageClient(nc), RouterClient(nc))
        responses = ResponseStore(await responses_bucket(js))
        credit = CreditLeases(
            nc,
            billing,
            use_s=settings.lease_use_s,
            idle_s=settings.lease_idle_s,
            settle_within_s=settings.job_timeout_s + settings.reservation_grace_s,
        )
        await credit.start()
        app.state.gateway = GatewayState(
            settings, nc, js, registry, keys, metrics, counters, inboxes, *clients, responses, credit
        )
        freeze_startup_heap()
        try:
            yield
        finally:
            await registry.stop()
            await keys.close()
            await credit.close()  # returns this replica's leases
            await nc.drain()
            if tracer_provider is not None:
                tracer_provider.shutdown()  # sends the spans still queued

    # FastAPI (0.165+) traces a request on its own once a tracer provider is set. The edge middleware's
    # span is the request's here, with the GenAI attributes the routes add; FastAPI's would be a
    # second SERVER span around it, its operation spans ending before a streamed answer does.
    app = FastAPI(title="Lexora API", version="0.1.0", lifespan=lifespan, telemetry=NO_FASTAPI_TELEMETRY)
    install_error_handlers(app)
    api = (
        openai_routes,
        responses_routes,
        media_routes,
        anthropic_routes,
        platform_routes,
        account_routes,
        topup_routes,
        console_api_routes,
        admin_routes,
        oidc_routes,
    )
    install_openapi(app, api, prefix="/v1")
    for routes in api:
        app.include_router(routes, prefix="/v1")
        app.include_router(routes, prefix="/api/v1", include_in_schema=False)

    # The web console at `/`: pages rendered from the account API above (docs/console.md).
    console = ConsoleConfig(settings.console_secret.get_secret_value(), settings.console_cookie_secure)
    app.include_router(create_router(console))
    app.mount("/console-static", StaticFiles(packages=[("lexora_console", "static")]), name="console-static")

    @app.get("/livez", include_in_schema=False)
    async def livez() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        # Ready to take traffic: connected to NATS with the model registry loaded. Other services'
        # health is /v1/health's business; a probe must not take every gateway out with them. Nor
        # must one broken model take out the gateways serving the others: models whose engine cannot
        # serve are named in the body (and answered with 503), the status stays 200.
        state = getattr(app.state, "gateway", None)
        ready = state is not None and state.nc.is_connected and state.registry.loaded
        body: dict[str, object] = {"status": "ok" if ready else "not ready"}
        if state is not None:
            body["degraded_models"] = [m.id for m in state.registry.all() if m.status == "degraded"]
        return JSONBody(body, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def body_limit() -> int:
        # Refused before anything else: a body larger than a job can be (NATS's max_payload) or than
        # one image at its size limit, base64-encoded, with room for the rest (so an image too large
        # still gets the error that names it).
        if settings.max_request_bytes is not None:
            return settings.max_request_bytes
        state = getattr(app.state, "gateway", None)
        one_image = -(-settings.image_max_bytes * 4 // 3) + REQUEST_ROOM_BYTES
        return max(state.nc.max_payload if state is not None else 0, one_image)

    app.add_middleware(BodyLimit, limit=body_limit, idle_timeout_s=settings.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "http": EdgeHttpProtocol,
    }
    if settings.workers > 1:
        uvicorn.run("lexora_gateway.app:create_app", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
