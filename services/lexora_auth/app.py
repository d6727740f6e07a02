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
    CreateKeyReply,
    CreateKeyRequest,
    HealthProbe,
    HealthReply,
    Identity,
    KeyList,
    KeyRevoked,
    ListKeysRequest,
    RevokeKeyRequest,
    VerifyKeyRequest,
)
from lexora_db.engine import create_asyncpg_pool, create_engine, database_unreachable
from lexora_runtime.bus import encode
from lexora_runtime.metrics import create_metrics, serve_metrics
from lexora_runtime.service import ServiceContext, health_of, run_until_stopped

log = logging.getLogger("lexora.auth")


async def serve(settings: AuthSettings, ctx: ServiceContext) -> None:
    engine = create_engine(settings.database_url)
    # Verification's only write is a key's "last used" time, so its connections commit without
    # waiting for the WAL flush: a crash can lose a few seconds of "last used", nothing else.
    verify_pool = await create_asyncpg_pool(engine, min_size=0, server_settings={"synchronous_commit": "off"})
    store = AccountStore(engine, settings.key_pepper.get_secret_value(), settings.key_prefix, verify_pool)
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

    async def create_key(request: CreateKeyRequest) -> CreateKeyReply:
        reply = await store.create_key(request.account_id, request.name, request.spend_limit_micro)
        log.info("key created", extra={"fields": {"account_id": request.account_id, "key_id": reply.key_id}})
        return reply

    async def list_keys(request: ListKeysRequest) -> KeyList:
        return KeyList(account_id=request.account_id, keys=await store.list_keys(request.account_id))

    async def revoke_key(request: RevokeKeyRequest) -> KeyRevoked:
        await store.revoke_key(request.key_id, request.account_id)
        # Every gateway drops its cached verification of this key on this event; announced again
        # on a repeated revoke, in case a gateway missed it the first time.
        await ctx.nc.publish(subjects.AUTH_KEY_REVOKED, encode(KeyRevoked(key_id=request.key_id)))
        log.info("key revoked", extra={"fields": {"key_id": request.key_id}})
        return KeyRevoked(key_id=request.key_id)

    async def health(_: HealthProbe) -> HealthReply:
        return await health_of("auth", database=store.ping)

    await ctx.start_service(
        "auth",
        {
            "verify": (subjects.AUTH_KEY_VERIFY, VerifyKeyRequest, verify),
            "create_account": (subjects.AUTH_ACCOUNT_CREATE, CreateAccountRequest, create_account),
            "create_key": (subjects.AUTH_KEY_CREATE, CreateKeyRequest, create_key),
            "list_keys": (subjects.AUTH_KEY_LIST, ListKeysRequest, list_keys),
            "revoke_key": (subjects.AUTH_KEY_REVOKE, RevokeKeyRequest, revoke_key),
            "health": (subjects.AUTH_HEALTH, HealthProbe, health),
        },
        unreachable=database_unreachable,
    )
    try:
        await ctx.stopped()
    finally:
        await verify_pool.close()
        await engine.dispose()


def main() -> None:
    settings = AuthSettings()
    run_until_stopped("auth", settings, serve)
