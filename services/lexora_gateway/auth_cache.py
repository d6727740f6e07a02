"""Verified keys cached in the gateway so the hot path makes no auth round trip.

Entries are keyed by a hash of the key (the key itself is never kept) and dropped at once when
auth announces a revocation.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from lexora_contracts.messages import Identity

MAX_ENTRIES = 100_000


class KeyCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_s
        self._clock = clock
        self._entries: dict[bytes, tuple[Identity, float]] = {}

    @staticmethod
    def _fingerprint(api_key: str) -> bytes:
        return hashlib.sha256(api_key.encode()).digest()

    def get(self, api_key: str) -> Identity | None:
        fingerprint = self._fingerprint(api_key)
        entry = self._entries.get(fingerprint)
        if entry is None:
            return None
        identity, expires = entry
        if self._clock() >= expires:
            del self._entries[fingerprint]
            return None
        return identity

    def put(self, api_key: str, identity: Identity) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # rare; a full cache only costs a few auth round trips
        self._entries[self._fingerprint(api_key)] = (identity, self._clock() + self._ttl)

    def revoke(self, key_id: str) -> None:
        for fingerprint, (identity, _) in list(self._entries.items()):
            if identity.key_id == key_id:
                del self._entries[fingerprint]
