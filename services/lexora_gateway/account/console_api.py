"""The account API behind the console: sign-up and sign-in, keys, settings, transactions.

Sign-up and sign-in set the session cookie (lexora_console.cookies); every other route takes the
cookie (with the CSRF header when it changes something) or an API key (lexora_gateway.account.callers).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from lexora_console import cookies, csrf
from lexora_contracts.accounts_api import (
    AccountInfo,
    AccountUpdate,
    SessionReply,
    SignInRequest,
    SignUpRequest,
    UserInfo,
    UserUpdate,
)
from lexora_contracts.errors import InvalidRequest
from lexora_contracts.money import usd_to_micro
from lexora_contracts.usage_api import TransactionsRequest
from lexora_gateway.account.callers import AnyCaller, ConsoleCaller, account_for, checked_id, session_token_of
from lexora_gateway.account.routes import _date_param, _int_param, iso, micro_usd, usd
from lexora_gateway.account.schemas import KeyCreate, SettingsUpdate, SignIn, SignUp
from lexora_gateway.http import JSONBody, parse_body
from lexora_gateway.state import GatewayState, StateDep

router = APIRouter()


def account_view(account: AccountInfo) -> dict[str, Any]:
    return {
        "id": account.account_id,
        "object": "account",
        "name": account.name,
        "email": account.email,
        "role": account.role,
        "plan": account.plan,
        "timezone": account.timezone,
        "disabled": account.disabled,
        "created_at": iso(account.created_at),
    }


def user_view(user: UserInfo) -> dict[str, Any]:
    return {
        "id": user.user_id,
        "object": "user",
        "email": user.email,
        "role": user.role,
        "account": account_view(user.account),
    }


def signed_in_response(state: GatewayState, reply: SessionReply, redirect_to: str | None = None) -> Response:
    """The user (or a redirect), with the session cookie and a CSRF token for the forms and scripts
    that follow."""
    secure = state.settings.console_cookie_secure
    token = csrf.new_token(state.settings.console_secret.get_secret_value())
    if redirect_to is None:
        response: Response = JSONBody({**user_view(reply.user), "csrf_token": token})
    else:
        response = RedirectResponse(redirect_to, status_code=303)
    max_age = max(int((reply.expires_at - datetime.now(UTC)).total_seconds()), 60)
    response.set_cookie(**cookies.session_cookie(reply.token, max_age, secure))
    response.set_cookie(**cookies.csrf_cookie(csrf.COOKIE, token, secure))
    return response


def _client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/auth/signup", tags=["console"])
async def sign_up(request: Request, state: StateDep) -> Response:
    body = parse_body(SignUp, await request.body())
    reply = await state.auth.sign_up(SignUpRequest(**body.model_dump()))
    return signed_in_response(state, reply)


@router.post("/auth/signin", tags=["console"])
async def sign_in(request: Request, state: StateDep) -> Response:
    body = parse_body(SignIn, await request.body())
    reply = await state.auth.sign_in(
        SignInRequest(email=body.email, password=body.password, client=_client_of(request))
    )
    return signed_in_response(state, reply)


@router.post("/auth/signout", tags=["console"])
async def sign_out(request: Request, state: StateDep) -> Response:
    token = session_token_of(request)
    if token is not None:
        await state.auth.sign_out(token)
    response = JSONBody({"signed_out": True})
    response.delete_cookie(cookies.SESSION, path="/")
    return response


@router.get("/auth/signup-mode", tags=["console"])
async def signup_mode(state: StateDep) -> Response:
    """Who may sign up (open, invite, closed), and the OpenID Connect provider's name when one is set up."""
    settings = state.settings
    oidc = settings.oidc_name if settings.oidc_issuer and settings.oidc_client_id else None
    return JSONBody({"mode": (await state.auth.signup_mode()).mode, "oidc": oidc})


@router.get("/me", tags=["console"])
async def me(caller: AnyCaller, state: StateDep) -> Response:
    """The signed-in user (or the key's account) with balance."""
    account = await state.auth.account(caller.account_id)
    balance = await state.billing.balance(caller.account_id)
    body: dict[str, Any] = {
        "account": account_view(account),
        "balance_usd": micro_usd(balance.balance_micro),
        "available_usd": micro_usd(balance.available_micro),
    }
    limits = state.settings.plans.get(account.plan)
    body["plan_limits"] = limits.model_dump() if limits else {}
    if caller.user is not None:
        body["user"] = {"id": caller.user.user_id, "email": caller.user.email, "role": caller.user.role}
    return JSONBody(body)


# ---- keys ---------------------------------------------------------------------------------------
@router.get("/keys", tags=["console"])
async def list_keys(request: Request, caller: ConsoleCaller, state: StateDep) -> Response:
    account_id = account_for(caller, request.query_params.get("account_id"))
    keys = await state.auth.list_keys(account_id)
    spend = (await state.usage.key_spend(account_id)).cost_pico
    return JSONBody(
        {
            "object": "list",
            "data": [
                {
                    "id": k.key_id,
                    "object": "api_key",
                    "name": k.name,
                    "prefix": k.display_prefix,
                    "created_at": iso(k.created_at),
                    "last_used_at": iso(k.last_used_at) if k.last_used_at else None,
                    "revoked_at": iso(k.revoked_at) if k.revoked_at else None,
                    "spend_usd": usd(spend.get(k.key_id, 0)),
                    "spend_limit_usd": None if k.spend_limit_micro is None else micro_usd(k.spend_limit_micro),
                }
                for k in sorted(keys.keys, key=lambda k: k.created_at, reverse=True)
            ],
        }
    )


@router.post("/keys", tags=["console"])
async def create_key(request: Request, caller: ConsoleCaller, state: StateDep) -> Response:
    account_id = account_for(caller, request.query_params.get("account_id"))
    body = parse_body(KeyCreate, await request.body())
    limit = None if body.spend_limit_usd is None else usd_to_micro(body.spend_limit_usd)
    reply = await state.auth.create_key(account_id, body.name.strip() or None, limit)
    return JSONBody(
        {
            "id": reply.key_id,
            "object": "api_key",
            "name": body.name,
            "prefix": reply.display_prefix,
            "api_key": reply.api_key,  # the only time it is shown
            "spend_limit_usd": None if limit is None else micro_usd(limit),
        },
        status_code=201,
    )


@router.delete("/keys/{key_id}", tags=["console"])
async def revoke_key(key_id: str, request: Request, caller: ConsoleCaller, state: StateDep) -> Response:
    account_id = account_for(caller, request.query_params.get("account_id"))
    await state.auth.revoke_key(checked_id(key_id, "key_id"), account_id)
    return JSONBody({"id": key_id, "object": "api_key", "revoked": True})


# ---- settings -----------------------------------------------------------------------------------
@router.get("/settings", tags=["console"])
async def get_settings(request: Request, caller: ConsoleCaller, state: StateDep) -> Response:
    account_id = account_for(caller, request.query_params.get("account_id"))
    return JSONBody(account_view(await state.auth.account(account_id)))


@router.patch("/settings", tags=["console"])
async def update_settings(request: Request, caller: ConsoleCaller, state: StateDep) -> Response:
    """Timezone (it sets when the free-model daily limit resets), and a user's email and password."""
    account_id = account_for(caller, request.query_params.get("account_id"))
    body = parse_body(SettingsUpdate, await request.body())
    if body.email is not None or body.new_password is not None:
        if caller.user is None or account_id != caller.account_id:
            raise InvalidRequest("Email and password are changed by the signed-in user", param="email")
        await state.auth.update_user(
            UserUpdate(
                user_id=caller.user.user_id,
                email=body.email,
                current_password=body.current_password,
                new_password=body.new_password,
            )
        )
    account = await state.auth.update_account(AccountUpdate(account_id=account_id, timezone=body.timezone))
    return JSONBody(account_view(account))


# ---- transactions ------------------------------------------------------------------------------
@router.get("/credits/transactions", tags=["console"])
async def transactions(request: Request, caller: AnyCaller, state: StateDep) -> Response:
    """Credits one by one (top-ups, grants) and charges summed per day in the account's timezone."""
    account_id = account_for(caller, request.query_params.get("account_id"))
    start, end = _date_param(request, "start_date"), _date_param(request, "end_date")
    if start and end and end < start:
        raise InvalidRequest("'end_date' is before 'start_date'", param="end_date")
    limit = _int_param(request, "limit", 100, 1, 1000)
    account = await state.auth.account(account_id)
    reply = await state.billing.transactions(
        TransactionsRequest(
            account_id=account_id,
            start=datetime.combine(start, time(), UTC) if start else None,
            # end_date is inclusive; the last day there is has no day after it.
            end=datetime.combine(end + timedelta(days=1), time(), UTC) if end and end < date.max else None,
            timezone=account.timezone,
            limit=limit,
        )
    )
    return JSONBody(
        {
            "object": "list",
            "timezone": account.timezone,
            "data": [
                {
                    "object": "transaction",
                    "kind": t.kind,
                    "amount_usd": micro_usd(t.amount_micro),
                    "created_at": iso(t.created_at) if t.created_at else None,
                    "date": t.day.isoformat() if t.day else None,
                    "count": t.count,
                    "reason": t.reason,
                }
                for t in reply.transactions
            ],
        }
    )
