import asyncio

import pytest

from lexora_auth import keys
from lexora_contracts.errors import Unauthorized
from lexora_contracts.messages import Identity
from lexora_gateway.admission.key_cache import KeyCache
from lexora_gateway.admission.key_verifier import KeyVerifier

IDENTITY = Identity(account_id="acct", key_id="key_1", plan="free")


def test_keys_are_random_prefixed_and_hash_depends_on_the_pepper() -> None:
    key = keys.new_api_key("sk-lexora-")
    assert key.startswith("sk-lexora-") and len(key) > 40
    assert keys.new_api_key("sk-lexora-") != key
    assert keys.hash_api_key("p1", key) != keys.hash_api_key("p2", key)
    assert key not in keys.hash_api_key("p1", key)


def test_display_prefix_never_reveals_the_secret_part() -> None:
    key = keys.new_api_key("sk-lexora-")
    shown = keys.display_prefix("sk-lexora-", key)
    assert shown.startswith("sk-lexora-") and len(shown) == len("sk-lexora-") + 5


def test_cached_identity_expires_after_ttl() -> None:
    now = [0.0]
    cache = KeyCache(ttl_s=10, clock=lambda: now[0])
    cache.put("sk-1", IDENTITY)
    assert cache.lookup("sk-1")[0] == IDENTITY
    now[0] = 10.0
    assert cache.lookup("sk-1")[0] is None


def test_revocation_drops_the_cached_key_at_once() -> None:
    cache = KeyCache(ttl_s=60)
    cache.put("sk-1", IDENTITY)
    cache.revoke("key_1")
    assert cache.lookup("sk-1")[0] is None


def test_an_entry_past_half_its_ttl_is_served_and_due_for_a_refresh() -> None:
    now = [0.0]
    cache = KeyCache(ttl_s=10, clock=lambda: now[0])
    cache.put("sk-1", IDENTITY)
    assert cache.lookup("sk-1") == (IDENTITY, False)
    now[0] = 5.0
    assert cache.lookup("sk-1") == (IDENTITY, True)
    cache.put("sk-1", IDENTITY)  # refreshed: fresh again, its TTL counted from the new verification
    now[0] = 9.0
    assert cache.lookup("sk-1") == (IDENTITY, False)
    now[0] = 12.0  # past the first verification's TTL, served on the second's
    assert cache.lookup("sk-1") == (IDENTITY, True)
    assert cache.lookup("sk-2") == (None, False)


def test_a_verification_that_began_before_a_revocation_is_not_cached() -> None:
    now = [0.0]
    cache = KeyCache(ttl_s=60, clock=lambda: now[0])
    began = cache.now()
    now[0] = 1.0
    cache.revoke("key_1")  # arrives while auth's (older) answer is on its way
    now[0] = 2.0
    assert cache.put("sk-1", IDENTITY, verified_at=began) is False
    assert cache.lookup("sk-1")[0] is None
    assert cache.put("sk-1", IDENTITY, verified_at=cache.now()) is True  # verified again since


class FakeAuth:
    """Stands in for auth's NATS endpoint: counts calls and answers when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.answers: asyncio.Queue[Identity | Exception] = asyncio.Queue()

    async def verify(self, api_key: str) -> Identity:
        self.calls += 1
        answer = await self.answers.get()
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_concurrent_requests_with_one_uncached_key_share_one_verification() -> None:
    async def scenario() -> None:
        auth = FakeAuth()
        verifier = KeyVerifier(KeyCache(ttl_s=60), auth.verify)
        waiting = [asyncio.create_task(verifier.identity("sk-1")) for _ in range(16)]
        await asyncio.sleep(0)
        waiting[0].cancel()  # one client goes away; the others still get their answer
        auth.answers.put_nowait(IDENTITY)
        results = await asyncio.gather(*waiting[1:])
        assert results == [IDENTITY] * 15 and auth.calls == 1
        assert await verifier.identity("sk-1") == IDENTITY and auth.calls == 1  # cached

    asyncio.run(scenario())


def test_a_key_due_for_refresh_is_served_at_once_and_verified_in_the_background() -> None:
    async def scenario() -> None:
        now = [0.0]
        auth = FakeAuth()
        verifier = KeyVerifier(KeyCache(ttl_s=10, clock=lambda: now[0]), auth.verify)
        auth.answers.put_nowait(IDENTITY)
        await verifier.identity("sk-1")
        now[0] = 6.0
        # served without waiting for auth, which has not answered yet
        assert await asyncio.wait_for(verifier.identity("sk-1"), 1) == IDENTITY
        assert await asyncio.wait_for(verifier.identity("sk-1"), 1) == IDENTITY
        assert auth.calls == 2  # one refresh for both requests
        upgraded = IDENTITY.model_copy(update={"plan": "pro"})
        auth.answers.put_nowait(upgraded)
        await asyncio.sleep(0.01)
        now[0] = 12.0  # past the first verification's TTL: the refresh's answer is what is cached
        assert await verifier.identity("sk-1") == upgraded and auth.calls == 2

    asyncio.run(scenario())


def test_a_refresh_refused_by_auth_drops_the_key_and_a_failed_one_keeps_it_until_it_expires() -> None:
    async def scenario() -> None:
        now = [0.0]
        auth = FakeAuth()
        verifier = KeyVerifier(KeyCache(ttl_s=10, clock=lambda: now[0]), auth.verify)
        for key in ("sk-1", "sk-2"):
            auth.answers.put_nowait(IDENTITY)
            await verifier.identity(key)
        now[0] = 6.0
        auth.answers.put_nowait(TimeoutError())  # auth unreachable for sk-1's refresh
        assert await verifier.identity("sk-1") == IDENTITY
        await asyncio.sleep(0.01)
        auth.answers.put_nowait(Unauthorized("Invalid or revoked API key"))  # sk-2 was revoked
        assert await verifier.identity("sk-2") == IDENTITY
        await asyncio.sleep(0.01)
        auth.answers.put_nowait(IDENTITY)
        assert await verifier.identity("sk-1") == IDENTITY  # still cached; refreshed again
        auth.answers.put_nowait(Unauthorized("Invalid or revoked API key"))
        with pytest.raises(Unauthorized):
            await verifier.identity("sk-2")  # no longer cached: verified, and refused
        assert auth.calls == 6  # two first verifications, three refreshes, one after the drop

    asyncio.run(scenario())


def test_closing_the_verifier_stops_the_verifications_in_flight() -> None:
    async def scenario() -> None:
        auth = FakeAuth()  # never answers
        verifier = KeyVerifier(KeyCache(ttl_s=60), auth.verify)
        waiting = asyncio.create_task(verifier.identity("sk-1"))
        await asyncio.sleep(0)
        await verifier.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
