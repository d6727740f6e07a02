"""The pages' way to the account API: the same HTTP routes a script would call, asked in-process
(through the ASGI app that serves the page), with the browser's cookies and CSRF token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request

from lexora_console import cookies, csrf


@dataclass
class ApiAnswer:
    status: int
    body: Any
    set_cookies: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        """The API's error message (its envelope), for the page to show."""
        if self.ok:
            return ""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("message") or "Something went wrong")
        return f"Something went wrong (HTTP {self.status})"


class Api:
    def __init__(self, request: Request, csrf_token: str | None = None):
        self._request = request
        self._csrf = csrf_token
        # Only our own cookies travel on: the API needs nothing else from the browser.
        self._cookies = {
            name: value for name, value in request.cookies.items() if name in (cookies.SESSION, csrf.COOKIE)
        }

    async def call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> ApiAnswer:
        client = self._request.client
        transport = httpx.ASGITransport(
            app=self._request.app, client=(client.host, client.port) if client else ("127.0.0.1", 0)
        )
        headers = {csrf.HEADER: self._csrf} if self._csrf else {}
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        async with httpx.AsyncClient(transport=transport, base_url="http://console", cookies=self._cookies) as http:
            response = await http.request(method, path, json=json, params=params, headers=headers, timeout=60)
        try:
            body = response.json()
        except ValueError:
            body = None
        return ApiAnswer(response.status_code, body, response.headers.get_list("set-cookie"))

    async def get(self, path: str, **params: Any) -> ApiAnswer:
        return await self.call("GET", path, params=params)
