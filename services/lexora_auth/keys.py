"""API key material. Pure functions: no I/O, no clock.

Keys carry 256 bits of randomness, so a keyed fast hash (HMAC-SHA256 with a server-side pepper) is
the right storage: a slow password hash would add latency to every cache miss and buy nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

DISPLAY_CHARS = 4


def new_api_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_api_key(pepper: str, api_key: str) -> str:
    return hmac.new(pepper.encode(), api_key.encode(), hashlib.sha256).hexdigest()


def display_prefix(prefix: str, api_key: str) -> str:
    """What listings show: the prefix and the first characters, enough to tell keys apart."""
    return api_key[: len(prefix) + DISPLAY_CHARS] + "…"


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex[:24]}"
