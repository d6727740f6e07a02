"""The pages every user has: sign-up and sign-in, Overview, Keys, Usage, Credits, Models,
Playground, Settings, and the pages Stripe Checkout returns to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from lexora_console.api_client import Api
from lexora_console.pages import (
    TIMEZONES_HINT,
    Console,
    chart_of,
    default_range,
    forbidden_form,
    month_start,
    relay_cookies,
    to_signin,
    today_utc,
)


def _safe_next(target: str | None) -> str:
    # Only a path on this site: never an open redirect to another one.
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def add_routes(router: APIRouter, console: Console) -> None:  # noqa: C901 - one route per page
    # ---- sign-up, sign-in, sign-out ---------------------------------------------------------------
    @router.get("/signin")
    async def signin_page(request: Request) -> Response:
        methods = (await Api(request).get("/v1/auth/signup-mode")).body or {}
        return console.render(
            request,
            "signin.html",
            title="Sign in",
            next=_safe_next(request.query_params.get("next")),
            oidc=methods.get("oidc"),
        )

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        answer = await api.call(
            "POST", "/v1/auth/signin", {"email": form.get("email", ""), "password": form.get("password", "")}
        )
        if not answer.ok:
            return console.render(
                request,
                "signin.html",
                status=answer.status,
                title="Sign in",
                error=answer.error,
                email=form.get("email", ""),
                next=_safe_next(form.get("next")),
            )
        return relay_cookies(answer, RedirectResponse(_safe_next(form.get("next")), status_code=303))

    @router.get("/signup")
    async def signup_page(request: Request) -> Response:
        mode = (await Api(request).get("/v1/auth/signup-mode")).body or {}
        return console.render(
            request,
            "signup.html",
            title="Sign up",
            mode=mode.get("mode", "open"),
            invitation=request.query_params.get("invitation", ""),
            timezone_hint=TIMEZONES_HINT,
        )

    @router.post("/signup")
    async def signup(request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        body = {
            "email": form.get("email", ""),
            "password": form.get("password", ""),
            "timezone": form.get("timezone") or "UTC",
            "invitation": form.get("invitation") or None,
        }
        answer = await api.call("POST", "/v1/auth/signup", body)
        if not answer.ok:
            mode = (await Api(request).get("/v1/auth/signup-mode")).body or {}
            return console.render(
                request,
                "signup.html",
                status=answer.status,
                title="Sign up",
                error=answer.error,
                mode=mode.get("mode", "open"),
                email=body["email"],
                timezone=body["timezone"],
                invitation=body["invitation"] or "",
                timezone_hint=TIMEZONES_HINT,
            )
        return relay_cookies(answer, RedirectResponse("/", status_code=303))

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        _, api = posted
        answer = await api.call("POST", "/v1/auth/signout")
        return relay_cookies(answer, RedirectResponse("/signin", status_code=303))

    # ---- the signed-in pages ----------------------------------------------------------------------
    async def me_or_none(api: Api) -> dict[str, Any] | None:
        answer = await api.get("/v1/me")
        return answer.body if answer.ok and "user" in (answer.body or {}) else None

    @router.get("/")
    async def overview(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        if me is None:
            return to_signin(request)
        today = today_utc()
        month = (await api.get("/v1/usage", start_date=month_start(today).isoformat(), limit=1)).body or {}
        today_row = next((d for d in month.get("daily", []) if d["date"] == today.isoformat()), None)
        return console.render(
            request,
            "overview.html",
            title="Overview",
            me=me,
            usage=month,
            today_requests=today_row["requests"] if today_row else 0,
            api_base=str(request.base_url).rstrip("/") + "/v1",
        )

    async def keys_page(request: Request, api: Api, me: dict[str, Any], **extra: Any) -> Response:
        keys = await api.get("/v1/keys")
        return console.render(
            request, "keys.html", title="Keys", me=me, keys=(keys.body or {}).get("data", []), **extra
        )

    @router.get("/keys")
    async def keys(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        return to_signin(request) if me is None else await keys_page(request, api, me)

    @router.post("/keys")
    async def create_key(request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        me = await me_or_none(api)
        if me is None:
            return to_signin(request)
        body: dict[str, Any] = {"name": form.get("name", "").strip()}
        if form.get("spend_limit_usd", "").strip():
            body["spend_limit_usd"] = form["spend_limit_usd"].strip()
        answer = await api.call("POST", "/v1/keys", body)
        if not answer.ok:
            return await keys_page(request, api, me, error=answer.error, name=body["name"])
        return await keys_page(request, api, me, created=answer.body)

    @router.post("/keys/{key_id}/revoke")
    async def revoke_key(key_id: str, request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        _, api = posted
        me = await me_or_none(api)
        if me is None:
            return to_signin(request)
        answer = await api.call("DELETE", f"/v1/keys/{key_id}")
        notice = "The key is revoked: requests with it are refused from now on." if answer.ok else None
        return await keys_page(request, api, me, error=answer.error, notice=notice)

    @router.get("/usage")
    async def usage(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        if me is None:
            return to_signin(request)
        start, end = default_range()
        start = request.query_params.get("start_date") or start
        end = request.query_params.get("end_date") or end
        answer = await api.get("/v1/usage", start_date=start, end_date=end, limit=20)
        report = answer.body if answer.ok else {}
        return console.render(
            request,
            "usage.html",
            title="Usage",
            me=me,
            usage=report,
            error=answer.error,
            start_date=start,
            end_date=end,
            bars=chart_of(report.get("daily", [])),
        )

    async def credits_page(request: Request, api: Api, me: dict[str, Any], status: int = 200, **extra: Any) -> Response:
        packages = (await api.get("/v1/billing/packages")).body or {}
        history = (await api.get("/v1/credits/transactions", limit=50)).body or {}
        return console.render(
            request,
            "credits.html",
            status=status,
            title="Credits",
            me=me,
            packages=packages,
            transactions=history.get("data", []),
            timezone=history.get("timezone", "UTC"),
            **extra,
        )

    @router.get("/credits")
    async def credits(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        return to_signin(request) if me is None else await credits_page(request, api, me)

    @router.post("/credits/checkout")
    async def checkout(request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        me = await me_or_none(api)
        if me is None:
            return to_signin(request)
        choice = form.get("package", "")
        body = {"amount_usd": form.get("amount_usd", "").strip()} if choice == "custom" else {"package": choice}
        answer = await api.call("POST", "/v1/billing/checkout", body)
        if answer.ok and answer.body.get("url"):
            return RedirectResponse(answer.body["url"], status_code=303)  # Stripe's hosted page
        return await credits_page(request, api, me, status=answer.status, error=answer.error)

    @router.get("/billing/success")
    async def billing_success(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        return console.render(
            request,
            "billing_result.html",
            title="Payment received",
            me=me,
            paid=True,
            session_id=request.query_params.get("session_id", ""),
        )

    @router.get("/billing/cancel")
    async def billing_cancel(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        return console.render(request, "billing_result.html", title="Payment cancelled", me=me, paid=False)

    @router.get("/models")
    async def models(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        catalog = (await api.get("/v1/models")).body or {}
        return console.render(request, "models.html", title="Models", me=me, models=catalog.get("data", []))

    @router.get("/playground")
    async def playground(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        if me is None:
            return to_signin(request)
        catalog = (await api.get("/v1/models")).body or {}
        chat = [m for m in catalog.get("data", []) if m.get("kind") == "chat" and m.get("status") == "live"]
        return console.render(request, "playground.html", title="Playground", me=me, models=chat)

    async def settings_page(
        request: Request, api: Api, me: dict[str, Any], status: int = 200, **extra: Any
    ) -> Response:
        return console.render(
            request, "settings.html", status=status, title="Settings", me=me, timezone_hint=TIMEZONES_HINT, **extra
        )

    @router.get("/settings")
    async def settings(request: Request) -> Response:
        api = Api(request)
        me = await me_or_none(api)
        return to_signin(request) if me is None else await settings_page(request, api, me)

    @router.post("/settings")
    async def update_settings(request: Request) -> Response:
        posted = await console.form(request)
        if posted is None:
            return forbidden_form(console, request)
        form, api = posted
        me = await me_or_none(api)
        if me is None:
            return to_signin(request)
        body: dict[str, Any] = {}
        if form.get("timezone"):
            body["timezone"] = form["timezone"].strip()
        if form.get("email") and form["email"].strip() != me["user"]["email"]:
            body["email"] = form["email"].strip()
        if form.get("new_password"):
            body["new_password"] = form["new_password"]
        if form.get("current_password"):
            body["current_password"] = form["current_password"]
        answer = await api.call("PATCH", "/v1/settings", body)
        me = await me_or_none(api) or me
        if not answer.ok:
            return await settings_page(request, api, me, status=answer.status, error=answer.error)
        return await settings_page(request, api, me, notice="Saved.")
