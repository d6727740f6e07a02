"""auth service wiring: NATS endpoints over the account store."""

from __future__ import annotations

import logging
import time

from lexora_auth.settings import AuthSettings
from lexora_auth.signin_limits import SignInLimiter
from lexora_auth.store import AccountStore
from lexora_auth.users import UserStore
from lexora_contracts import accounts_api as api
from lexora_contracts import subjects
from lexora_contracts.errors import RateLimitExceeded, Unauthorized
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
    people = UserStore(engine, settings.key_pepper.get_secret_value())
    signin_limits = SignInLimiter()
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

    async def announce_stale(key_ids: list[str]) -> None:
        # Gateways drop their cached verifications of these keys (plan, timezone or disabled changed):
        # the next request is verified again and sees the account as it is now.
        for key_id in key_ids:
            await ctx.nc.publish(subjects.AUTH_KEY_REVOKED, encode(KeyRevoked(key_id=key_id)))

    async def sign_up(request: api.SignUpRequest) -> api.SessionReply:
        reply = await people.sign_up(
            request.email, request.password, request.timezone, request.invitation, settings.signup_mode
        )
        log.info("user signed up", extra={"fields": {"user_id": reply.user.user_id}})
        return reply

    async def create_user(request: api.CreateUserRequest) -> api.UserInfo:
        user = await people.create_user(request.email, request.password, request.role, request.plan)
        log.info("user created", extra={"fields": {"user_id": user.user_id, "role": user.role}})
        return user

    async def sign_in(request: api.SignInRequest) -> api.SessionReply:
        email, now = request.email.strip().lower(), time.monotonic()
        wait = signin_limits.retry_after(email, request.client, now)
        if wait is not None:
            raise RateLimitExceeded("Too many failed sign-in attempts: try again later", retry_after=int(wait) + 1)
        try:
            reply = await people.sign_in(request.email, request.password)
        except Unauthorized:
            signin_limits.failed(email, request.client, now)
            raise
        signin_limits.succeeded(email)
        return reply

    async def sign_in_external(request: api.ExternalSignInRequest) -> api.SessionReply:
        reply = await people.sign_in_external(request.email, settings.signup_mode)
        log.info("signed in through OpenID Connect", extra={"fields": {"user_id": reply.user.user_id}})
        return reply

    async def verify_session(request: api.SessionRequest) -> api.UserInfo:
        return await people.verify_session(request.token)

    async def delete_session(request: api.SessionRequest) -> api.SignedOut:
        return api.SignedOut(signed_out=await people.delete_session(request.token))

    async def signup_mode(_: api.SignupModeRequest) -> api.SignupModeReply:
        return api.SignupModeReply(mode=settings.signup_mode)

    async def create_invitation(request: api.InvitationRequest) -> api.InvitationReply:
        return await people.create_invitation(request.created_by, request.email)

    async def get_account(request: api.AccountRequest) -> api.AccountInfo:
        return await people.account(request.account_id)

    async def search_accounts(request: api.AccountSearchRequest) -> api.AccountList:
        return api.AccountList(accounts=await people.search_accounts(request.query, request.limit))

    async def update_account(request: api.AccountUpdate) -> api.AccountInfo:
        account, key_ids = await people.update_account(request)
        changed = request.model_dump(exclude_none=True, exclude={"account_id"})
        if changed:
            await announce_stale(key_ids)
        log.info("account updated", extra={"fields": {"account_id": request.account_id, **changed}})
        return account

    async def update_user(request: api.UserUpdate) -> api.UserInfo:
        user = await people.update_user(request)
        log.info("user updated", extra={"fields": {"user_id": request.user_id}})
        return user

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
            "sign_up": (api.AUTH_USER_SIGNUP, api.SignUpRequest, sign_up),
            "create_user": (api.AUTH_USER_CREATE, api.CreateUserRequest, create_user),
            "sign_in": (api.AUTH_SESSION_CREATE, api.SignInRequest, sign_in),
            "sign_in_external": (api.AUTH_SESSION_EXTERNAL, api.ExternalSignInRequest, sign_in_external),
            "verify_session": (api.AUTH_SESSION_VERIFY, api.SessionRequest, verify_session),
            "delete_session": (api.AUTH_SESSION_DELETE, api.SessionRequest, delete_session),
            "signup_mode": (api.AUTH_SIGNUP_MODE_GET, api.SignupModeRequest, signup_mode),
            "create_invitation": (api.AUTH_INVITATION_CREATE, api.InvitationRequest, create_invitation),
            "get_account": (api.AUTH_ACCOUNT_GET, api.AccountRequest, get_account),
            "search_accounts": (api.AUTH_ACCOUNT_SEARCH, api.AccountSearchRequest, search_accounts),
            "update_account": (api.AUTH_ACCOUNT_UPDATE, api.AccountUpdate, update_account),
            "update_user": (api.AUTH_USER_UPDATE, api.UserUpdate, update_user),
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
