"""API keys verified by auth, through the gateway's cache.

- A cached key is served from the cache; one due for a refresh (KeyCache.lookup) is verified again
  in the background while the request goes on, so steady traffic never waits for auth.
- Concurrent requests with the same uncached key share one verification (a client opening with
  many parallel requests, or all the requests in flight when an entry expires).
- A background verification that auth refuses (the key was revoked) drops the entry; one that fails
  otherwise (auth unreachable) leaves it to expire, and the next request tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from lexora_contracts.errors import Unauthorized
from lexora_contracts.messages import Identity
from lexora_gateway.admission.key_cache import KeyCache, fingerprint

log = logging.getLogger("lexora.gateway.keys")


class KeyVerifier:
    def __init__(self, cache: KeyCache, verify: Callable[[str], Awaitable[Identity]]):
        self._cache = cache
        self._verify = verify
        self._in_flight: dict[bytes, asyncio.Task[Identity]] = {}

    async def identity(self, api_key: str) -> Identity:
        """The caller's identity, or Unauthorized (or auth's failure) from the verification."""
        identity, due = self._cache.lookup(api_key)
        if identity is None:
            # shield: a client that goes away does not cancel what other requests wait on
            return await asyncio.shield(self._verification(api_key))
        if due:
            self._verification(api_key)
        return identity

    def revoke(self, key_id: str) -> None:
        self._cache.revoke(key_id)

    async def close(self) -> None:
        """Stop the verifications still running (at shutdown)."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _verification(self, api_key: str) -> asyncio.Task[Identity]:
        key = fingerprint(api_key)
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._verify_and_cache(api_key))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    async def _verify_and_cache(self, api_key: str) -> Identity:
        began = self._cache.now()
        try:
            identity = await self._verify(api_key)
        except Unauthorized:
            self._cache.drop(api_key)
            raise
        self._cache.put(api_key, identity, verified_at=began)
        return identity

    def _finished(self, key: bytes, task: asyncio.Task[Identity]) -> None:
        self._in_flight.pop(key, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved, so a refresh nobody awaited logs no warning
        if error is not None and not isinstance(error, Unauthorized):
            log.warning("key verification failed: %s", type(error).__name__)
