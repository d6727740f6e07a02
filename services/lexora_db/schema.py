"""Tables, grouped by the service that owns them. A service reads and writes only its own tables."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

# ---- auth -------------------------------------------------------------------------------------
accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200)),
    Column("plan", String(20), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True)),  # a disabled account's keys and sessions stop
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # HMAC-SHA256(pepper, key), hex
    Column("display_prefix", String(24), nullable=False),  # e.g. "sk-lexora-AbC…", never the key
    Column("name", String(200)),
    Column("spend_limit_micro", BigInteger),  # optional cap on what this key may spend, in total
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
)

# ---- billing ----------------------------------------------------------------------------------
balances = Table(
    "balances",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("balance_micro", BigInteger, nullable=False),
    Column("held_micro", BigInteger, nullable=False, server_default="0"),
    Column("carry_pico", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

reservations = Table(
    "reservations",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False, index=True),
    Column("amount_micro", BigInteger, nullable=False),
    Column("key_id", String(40)),
    Column("status", String(16), nullable=False),  # held | settled | released
    Column("charged_micro", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True)),
    Index("ix_reservations_held_expiry", "status", "expires_at"),
)

# Credit leases (docs/billing.md "Credit leases"): credit a gateway replica (`holder`) covers its
# requests with from memory. `held_micro` is what the lease still holds on the balance (and on the
# key, when `key_id` is set: a key with a spend limit); `settled_micro` what was charged against it
# from `settled_requests` usage events. A final return records `expected_requests`: once that many
# are settled, the rest is released (status closed). Expired (the holder died or never returned it):
# the sweeper releases what it holds.
credit_leases = Table(
    "credit_leases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False, index=True),
    Column("key_id", String(40)),
    Column("holder", String(200), nullable=False),
    Column("amount_micro", BigInteger, nullable=False),  # granted
    Column("held_micro", BigInteger, nullable=False),  # still held on the balance
    Column("settled_micro", BigInteger, nullable=False, server_default="0"),
    Column("settled_requests", Integer, nullable=False, server_default="0"),
    Column("expected_requests", Integer),
    Column("status", String(16), nullable=False),  # active | returned | closed | expired
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True)),
    Index("ix_credit_leases_open_expiry", "status", "expires_at"),
)

# What each key has spent and holds, for keys with a spend limit (checked in the same transaction
# as the account's hold).
key_spend = Table(
    "key_spend",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("spent_micro", BigInteger, nullable=False, server_default="0"),
    Column("held_micro", BigInteger, nullable=False, server_default="0"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", String(40), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # topup | adjustment | charge | refund | hold | release
    Column("amount_micro", BigInteger, nullable=False),  # signed; balance = sum(amount_micro)
    Column("held_delta_micro", BigInteger, nullable=False, server_default="0"),  # held = sum(held_delta)
    Column("cost_pico", BigInteger, nullable=False, server_default="0"),  # exact cost of a charge
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("actor", String(128)),
    Column("reason", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_account_time", "account_id", "created_at"),  # an account's recent spend (leases)
)

# ---- usage ------------------------------------------------------------------------------------
usage_records = Table(
    "usage_records",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("error_type", String(64)),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cost_pico", BigInteger, nullable=False),
    Column("finish_reason", String(32)),
    Column("stream", Boolean, nullable=False),
    Column("thinking_used", Boolean, nullable=False, server_default="false"),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_usage_account_time", "account_id", "received_at"),
)

# ---- auth: people who sign in to the console ---------------------------------------------------
# One user owns one account (its sign-up made it); `role` admin may act on every account.
users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False, unique=True),  # stored lower-cased
    Column("password_hash", String(200)),  # Argon2id, PHC string; NULL for OpenID Connect users
    Column("role", String(16), nullable=False, server_default="user"),  # user | admin
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A signed-in browser: the cookie carries a random token, the table only its keyed hash.
sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Invitation links an admin creates (sign-up mode `invite`); each signs up one user.
invitations = Table(
    "invitations",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("created_by", String(40), nullable=False),
    Column("email", String(320)),  # when given, only this address may use it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
)
