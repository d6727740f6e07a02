"""CSRF tokens for the console's forms and the account API's cookie callers. Pure: no I/O.

Double-submit, signed: the browser holds a token in a cookie and sends the same token in the form
(or in the `X-CSRF-Token` header). Another site can make the browser send the cookie but can read
neither it nor the page, so it cannot send the matching field. The token is signed with the
server's secret, so a cookie planted by a neighbouring host is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "lexora_csrf"
HEADER = "x-csrf-token"
FIELD = "csrf_token"


def _signature(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), ("csrf:" + nonce).encode(), hashlib.sha256).hexdigest()[:32]


def new_token(secret: str) -> str:
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_signature(secret, nonce)}"


def is_signed(secret: str, token: str | None) -> bool:
    if not token:
        return False
    nonce, _, signature = token.partition(".")
    return bool(nonce) and hmac.compare_digest(signature, _signature(secret, nonce))


def submitted_matches(secret: str, cookie: str | None, submitted: str | None) -> bool:
    """The form's (or header's) token is the cookie's, and the cookie's is ours."""
    return (
        is_signed(secret, cookie) and submitted is not None and hmac.compare_digest(cookie.encode(), submitted.encode())  # type: ignore[union-attr]
    )
