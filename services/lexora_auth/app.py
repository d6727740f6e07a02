"""auth service wiring: NATS endpoints over the account store."""

from __future__ import annotations

import logging

from lexora_auth.settings import AuthSettings
from lexora_auth.store import AccountStore
from lexora_contracts import subjects
from lexora_contracts.errors import Unauthorized
from lexora_contracts.messages import (
    CreateAccountReply,
    CreateAccountRequest,
    HealthProbe,
    HealthReply,
    Identity,
    VerifyKeyRequest,
)
from lexora_runtime.db import create_engine
from lexora_runtime.metrics import create_metrics, serve_metrics
from lexora_runtime.service import ServiceContext, health_of, run_until_stopped

log = logging.getLogger("lexora.auth")


async def serve(settings: AuthSettings, ctx: ServiceContext) -> None:
    engine = create_engine(settings.database_url)
    store = AccountStore(engine, settings.key_pepper.get_secret_value(), settings.key_prefix)
    metrics = create_metrics("auth")
    serve_metrics(metrics, settings.metrics_host, settings.metrics_port)

    async def verify(request: VerifyKeyRequest) -> Identity:
        identity = await store.identify(request.api_key)
        metrics.requests.labels("auth", "verify", "ok" if identity else "refused").inc()
        if identity is None:
            raise Unauthorized("Invalid or revoked API key")
        return identity

    async def create_account(request: CreateAccountRequest) -> CreateAccountReply:
        reply = await store.create_account(request.plan, request.name, request.timezone)
        log.info("account created", extra={"fields": {"account_id": reply.account_id, "key_id": reply.key_id}})
        return reply

    async def health(_: HealthProbe) -> HealthReply:
        return await health_of("auth", database=store.ping)

    await ctx.start_service(
        "auth",
        {
            "verify": (subjects.AUTH_KEY_VERIFY, VerifyKeyRequest, verify),
            "create_account": (subjects.AUTH_ACCOUNT_CREATE, CreateAccountRequest, create_account),
            "health": (subjects.AUTH_HEALTH, HealthProbe, health),
        },
    )
    try:
        await ctx.stopped()
    finally:
        await engine.dispose()


def main() -> None:
    settings = AuthSettings()
    run_until_stopped("auth", settings, serve)
