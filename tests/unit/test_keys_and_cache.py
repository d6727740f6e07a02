from lexora_auth import keys
from lexora_contracts.messages import Identity
from lexora_gateway.auth_cache import KeyCache

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
    assert cache.get("sk-1") == IDENTITY
    now[0] = 10.0
    assert cache.get("sk-1") is None


def test_revocation_drops_the_cached_key_at_once() -> None:
    cache = KeyCache(ttl_s=60)
    cache.put("sk-1", IDENTITY)
    cache.revoke("key_1")
    assert cache.get("sk-1") is None
