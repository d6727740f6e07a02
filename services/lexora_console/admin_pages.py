"""The admin view (role admin): accounts (search, grant credit, change plan, disable), invitations,
the deployed models and the system's health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lexora_console.api_client import Api
from lexora_console.pages import Console, forbidden_form, to_signin


def add_routes(router: APIRouter, console: Console) -> None:
    async def admin_page(request: Request, api: Api, status: int = 200, **extra: Any) -> Response:
        me = await api.get("/v1/me")
        if not me.ok:
            return to_signin(request)
        if (me.body.get("user") or {}).get("role") != "admin":
            message = "Only an administrator can see this page."
            return console.render(request, "message.html", status=403, title="Admin", me=me.body, message=message)
        query = request.query_params.get("q", "")
        accounts = await api.get("/v1/admin/accounts", q=query, limit=50)
        models = await api.get("/v1/admin/models")
        health = await api.get("/v1/health")
        balances = {}
        for account in (accounts.body or {}).get("data", [])[:20]:
            detail = await api.get(f"/v1/admin/accounts/{account['id']}")
            balances[account["id"]] = (detail.body or {}).get("balance_usd")
        return console.render(
            request,
            "admin.html",
            status=status,
            title="Admin",
            me=me.body,
            q=query,
            accounts=(accounts.body or {}).get("data", []),
            balances=balances,
            models=(models.body or {}).get("data", []),
            health=health.body or {},
            **extra,
        )

    @router.get("/admin")
    async def admin(request: Request) -> Response:
        return await admin_page(request, Api(request))

    @router.post("/admin/accounts/{account_id}/grant")
    async def grant(account_id: str, request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        body = {"amount_usd": form.get("amount_usd", "").strip(), "reason": form.get("reason", "").strip()}
        answer = await api.call("POST", f"/v1/admin/accounts/{account_id}/grants", body)
        notice = f"Granted ${body['amount_usd']} to {account_id}." if answer.ok else None
        return await admin_page(
            request, api, status=answer.status if not answer.ok else 200, error=answer.error, notice=notice
        )

    @router.post("/admin/accounts/{account_id}")
    async def change(account_id: str, request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        body: dict[str, Any] = {}
        if form.get("plan"):
            body["plan"] = form["plan"]
        if form.get("disabled") in ("true", "false"):
            body["disabled"] = form["disabled"] == "true"
        answer = await api.call("PATCH", f"/v1/admin/accounts/{account_id}", body)
        notice = f"Account {account_id} updated." if answer.ok else None
        return await admin_page(
            request, api, status=answer.status if not answer.ok else 200, error=answer.error, notice=notice
        )

    @router.post("/admin/invitations")
    async def invite(request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        answer = await api.call("POST", "/v1/admin/invitations", {"email": form.get("email") or None})
        link = f"{request.base_url}signup?invitation={answer.body['token']}" if answer.ok else None
        return await admin_page(request, api, error=answer.error, invitation_link=link)
