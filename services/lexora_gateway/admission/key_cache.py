"""Verified keys cached in the gateway so the hot path makes no auth round trip.

Entries are keyed by a hash of the key (the key itself is never kept) and dropped at once when
auth announces a revocation. An entry is served for `ttl_s` from the moment its verification
began; past half of that it is still served, but the caller is told to verify it again in the
background, so a key in steady use is verified again before it expires, off the request's path.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from lexora_contracts.messages import Identity

MAX_ENTRIES = 100_000


def fingerprint(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


class KeyCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_s
        self._refresh_after = ttl_s / 2
        self._clock = clock
        self._entries: dict[bytes, tuple[Identity, float]] = {}
        # key id -> when its revocation arrived: a verification that began before then and ends
        # after it must not put the key back (its answer may predate the revocation).
        self._revoked: dict[str, float] = {}

    def now(self) -> float:
        return self._clock()

    def lookup(self, api_key: str) -> tuple[Identity | None, bool]:
        """The cached identity (None when absent or expired) and whether it is due for a refresh."""
        key = fingerprint(api_key)
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        identity, verified_at = entry
        age = self._clock() - verified_at
        if age >= self._ttl:
            del self._entries[key]
            return None, False
        return identity, age >= self._refresh_after

    def put(self, api_key: str, identity: Identity, verified_at: float | None = None) -> bool:
        """Cache a verification that began at `verified_at` (default: now). Returns False, caching
        nothing, when the key was revoked since."""
        verified_at = self._clock() if verified_at is None else verified_at
        revoked_at = self._revoked.get(identity.key_id)
        if revoked_at is not None and revoked_at >= verified_at:
            return False
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # rare; a full cache only costs a few auth round trips
        self._entries[fingerprint(api_key)] = (identity, verified_at)
        return True

    def drop(self, api_key: str) -> None:
        self._entries.pop(fingerprint(api_key), None)

    def revoke(self, key_id: str) -> None:
        now = self._clock()
        for key, (identity, _) in list(self._entries.items()):
            if identity.key_id == key_id:
                del self._entries[key]
        # A verification outlives neither its NATS call nor the TTL: older revocations are moot.
        self._revoked = {k: at for k, at in self._revoked.items() if now - at < self._ttl}
        self._revoked[key_id] = now
