"""The console's cookies: names and attributes, shared by the pages and the account API."""

from __future__ import annotations

from typing import Any

SESSION = "lexora_session"


def session_cookie(token: str, max_age_s: int, secure: bool) -> dict[str, Any]:
    """HttpOnly (no script reads it), SameSite=Lax (not sent on another site's POST), Secure (never
    over plain HTTP, except to localhost, which browsers count as secure)."""
    return {
        "key": SESSION,
        "value": token,
        "max_age": max_age_s,
        "httponly": True,
        "secure": secure,
        "samesite": "lax",
        "path": "/",
    }


def csrf_cookie(name: str, token: str, secure: bool) -> dict[str, Any]:
    # HttpOnly too: pages carry the token in their forms and in a <meta> tag for scripts.
    return {"key": name, "value": token, "httponly": True, "secure": secure, "samesite": "strict", "path": "/"}
