"""The console's pages: a router the gateway mounts at `/`. Every page is rendered on the server from
the account API's answers (lexora_console.api_client); forms post back here with their CSRF token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from lexora_console import charts, cookies, csrf
from lexora_console.api_client import Api, ApiAnswer

NAV = [
    ("Overview", "/"),
    ("Keys", "/keys"),
    ("Usage", "/usage"),
    ("Credits", "/credits"),
    ("Models", "/models"),
    ("Playground", "/playground"),
    ("Settings", "/settings"),
]
TIMEZONES_HINT = "An IANA name such as UTC, Europe/Paris or America/New_York"


@dataclass(frozen=True)
class ConsoleConfig:
    secret: str  # signs the CSRF tokens
    cookie_secure: bool = True


class Console:
    """Renders pages; holds the template environment and the config (built in create_router)."""

    def __init__(self, config: ConsoleConfig):
        self.config = config
        self.templates = Environment(
            loader=PackageLoader("lexora_console", "templates"), autoescape=select_autoescape(["html"])
        )
        self.templates.filters["usd"] = usd

    def csrf_of(self, request: Request) -> tuple[str, bool]:
        """The browser's CSRF token, or a new one (True: it must be set as a cookie)."""
        token = request.cookies.get(csrf.COOKIE)
        if csrf.is_signed(self.config.secret, token):
            return token, False  # type: ignore[return-value]
        return csrf.new_token(self.config.secret), True

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        token, fresh = self.csrf_of(request)
        me = context.get("me")
        nav = NAV + ([("Admin", "/admin")] if me and (me.get("user") or {}).get("role") == "admin" else [])
        html = self.templates.get_template(template).render(csrf_token=token, nav=nav, path=request.url.path, **context)
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if fresh:
            response.set_cookie(**cookies.csrf_cookie(csrf.COOKIE, token, self.config.cookie_secure))
        return response

    async def form(self, request: Request) -> tuple[dict[str, str], Api] | None:
        """The posted form and an API client carrying its CSRF token, or None when the token is wrong."""
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        submitted = form.pop(csrf.FIELD, None)
        if not csrf.submitted_matches(self.config.secret, request.cookies.get(csrf.COOKIE), submitted):
            return None
        return form, Api(request, submitted)


def usd(value: Any) -> str:
    """Dollars for people: cents, or every digit the API gives for amounts under a cent (a request
    can cost a millionth of a dollar)."""
    number = float(value or 0)
    sign, number = ("-" if number < 0 else ""), abs(number)
    if 0 < number < 0.01:
        return f"{sign}${number:.8f}".rstrip("0")
    return f"{sign}${number:,.2f}"


def relay_cookies(answer: ApiAnswer, response: Response) -> Response:
    for header in answer.set_cookies:
        response.headers.append("set-cookie", header)
    return response


def to_signin(request: Request) -> RedirectResponse:
    return RedirectResponse("/signin?next=" + quote(request.url.path), status_code=303)


def forbidden_form(console: Console, request: Request) -> HTMLResponse:
    message = "This form has expired or did not come from this site: reload the page and try again."
    return console.render(request, "message.html", status=403, title="Form expired", message=message)


def create_router(config: ConsoleConfig) -> APIRouter:
    from lexora_console import admin_pages, user_pages

    console = Console(config)
    router = APIRouter(include_in_schema=False)
    user_pages.add_routes(router, console)
    admin_pages.add_routes(router, console)
    return router


def month_start(today: date) -> date:
    return today.replace(day=1)


def today_utc() -> date:
    return datetime.now(UTC).date()


def default_range() -> tuple[str, str]:
    today = today_utc()
    return (today - timedelta(days=29)).isoformat(), today.isoformat()


def chart_of(daily: list[dict[str, Any]]) -> list[charts.Bar]:
    return charts.daily_bars([(d["date"], float(d["cost"])) for d in daily], " USD")
