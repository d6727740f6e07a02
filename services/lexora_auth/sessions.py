"""Console sessions: token material and expiry rules. Pure: no I/O; the clock is an argument.

A session ends at the first of: `lifetime` after sign-in, or `idle` without use. Its token carries
256 random bits, so (like API keys) a keyed fast hash is what the table stores.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from lexora_auth.keys import hash_api_key

LIFETIME = timedelta(days=14)
IDLE = timedelta(days=2)
# "last seen" moves at most this often: a page view is not a database write each time.
SEEN_PRECISION = timedelta(minutes=5)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(pepper: str, token: str) -> str:
    return hash_api_key(pepper, "session:" + token)


def expires_at(created_at: datetime, last_seen_at: datetime, lifetime: timedelta = LIFETIME, idle: timedelta = IDLE):
    return min(created_at + lifetime, last_seen_at + idle)


def is_expired(created_at: datetime, last_seen_at: datetime, now: datetime, **limits: timedelta) -> bool:
    return now >= expires_at(created_at, last_seen_at, **limits)


def should_touch(last_seen_at: datetime, now: datetime) -> bool:
    return now - last_seen_at >= SEEN_PRECISION
