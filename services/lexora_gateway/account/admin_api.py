"""The admin API (role `admin`: a signed-in admin, or an admin's API key): accounts, grants, plans,
disabling, invitations, and the deployed models as the registry has them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lexora_contracts.accounts_api import AccountUpdate
from lexora_contracts.money import usd_to_micro
from lexora_gateway.account.callers import AdminCaller, checked_id, session_token_of
from lexora_gateway.account.console_api import account_view
from lexora_gateway.account.routes import _int_param, micro_usd
from lexora_gateway.account.schemas import AccountChange, GrantCreate, InvitationCreate
from lexora_gateway.admission.identity import api_key_of
from lexora_gateway.http import JSONBody, parse_body
from lexora_gateway.state import StateDep

router = APIRouter()


@router.get("/admin/accounts", tags=["admin"])
async def search_accounts(request: Request, caller: AdminCaller, state: StateDep) -> Response:
    """Accounts whose email, id or name contains `q` (the newest first)."""
    query = request.query_params.get("q", "")[:200]
    limit = _int_param(request, "limit", 50, 1, 200)
    found = await state.auth.search_accounts(query, limit)
    return JSONBody({"object": "list", "data": [account_view(a) for a in found.accounts]})


@router.get("/admin/accounts/{account_id}", tags=["admin"])
async def get_account(account_id: str, caller: AdminCaller, state: StateDep) -> Response:
    account = await state.auth.account(checked_id(account_id, "account_id"))
    balance = await state.billing.balance(account_id)
    return JSONBody({**account_view(account), "balance_usd": micro_usd(balance.balance_micro)})


@router.patch("/admin/accounts/{account_id}", tags=["admin"])
async def change_account(account_id: str, request: Request, caller: AdminCaller, state: StateDep) -> Response:
    """Change the plan, or disable (its keys stop at once) and re-enable the account."""
    checked_id(account_id, "account_id")
    body = parse_body(AccountChange, await request.body())
    account = await state.auth.update_account(
        AccountUpdate(account_id=account_id, plan=body.plan, disabled=body.disabled)
    )
    return JSONBody(account_view(account))


@router.post("/admin/accounts/{account_id}/grants", tags=["admin"])
async def grant_credit(account_id: str, request: Request, caller: AdminCaller, state: StateDep) -> Response:
    checked_id(account_id, "account_id")
    body = parse_body(GrantCreate, await request.body())
    await state.auth.account(account_id)  # a NotFound for an account that does not exist
    key = request.headers.get("idempotency-key") or uuid.uuid4().hex
    # Billing asks auth whether this credential is an admin's: the gateway may not grant by itself.
    balance = await state.billing.grant_as_admin(
        account_id,
        usd_to_micro(body.amount_usd),
        idempotency_key=f"console:{key}",
        reason=body.reason,
        session_token=None if caller.by_key else session_token_of(request),
        api_key=api_key_of(request) if caller.by_key else None,
    )
    return JSONBody(
        {"account_id": account_id, "object": "grant", "balance_usd": micro_usd(balance.balance_micro)}, status_code=201
    )


@router.post("/admin/invitations", tags=["admin"])
async def create_invitation(request: Request, caller: AdminCaller, state: StateDep) -> Response:
    """A sign-up link's token; the link is `<console>/signup?invitation=<token>`."""
    body = parse_body(InvitationCreate, await request.body())
    reply = await state.auth.create_invitation(caller.actor, body.email)
    return JSONBody(
        {"object": "invitation", "token": reply.token, "expires_at": reply.expires_at.isoformat()}, status_code=201
    )


@router.get("/admin/models", tags=["admin"])
async def deployed_models(caller: AdminCaller, state: StateDep) -> Response:
    """Each model as the registry has it: its phase (live, degraded, pipeline) and its replicas."""
    return JSONBody(
        {
            "object": "list",
            "data": [
                {
                    "id": m.id,
                    "kind": m.kind,
                    "phase": m.status,
                    "replicas": len(m.endpoints),
                    "ready_replicas": len(m.ready_endpoints),
                    "endpoints": [
                        {"name": e.name, "ready": e.ready, "healthy": e.healthy, "reason": e.unhealthy_reason}
                        for e in m.endpoints
                    ],
                }
                for m in state.registry.all()
            ],
        }
    )
