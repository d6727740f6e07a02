"""Who may publish and subscribe to what on NATS: one table (`PERMISSIONS`), one NATS user per
principal, rendered into nats-server's `authorization` block by `lexora dev` and, through the file
it generates (`charts/lexora/files/nats-authorization.conf`), by the Helm chart.

Adding a subject to a service is one line in its entry below: `serves` for what it answers,
`asks` for what it requests, `announces`/`hears` for events. Everything else is denied: only the
admin CLI may ask billing to grant credit. No I/O here; `render_authorization` returns text.

Conventions every client follows (`lexora_runtime.bus.connect`):
- each principal's reply inboxes live under `_INBOX.<principal>.` (`inbox_prefix`), and only it may
  subscribe there, so no service can read another's replies (created API keys, balances);
- a service answers the requests it received through `allow_responses` (one reply each), except
  the router's job chunks, which stream to the gateways' inboxes (`_INBOX.gateway.>`);
- JetStream's API is granted per stream and verb: nobody may delete or purge a stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lexora_contracts import accounts_api as accounts
from lexora_contracts import subjects as s
from lexora_contracts import topups, usage_api

GATEWAY, AUTH, BILLING, USAGE, ROUTER = "gateway", "auth", "billing", "usage", "router"
OPERATOR, ADMIN, DEV = "operator", "admin", "dev"


@dataclass(frozen=True)
class Grants:
    publish: frozenset[str] = frozenset()
    subscribe: frozenset[str] = frozenset()
    responds: bool = False  # allow_responses: may answer each request it received, once

    def __add__(self, other: Grants) -> Grants:
        return Grants(self.publish | other.publish, self.subscribe | other.subscribe, self.responds or other.responds)


def _pub(*subjects: str) -> Grants:
    return Grants(publish=frozenset(subjects))


def _sub(*subjects: str) -> Grants:
    return Grants(subscribe=frozenset(subjects))


def inbox_prefix(principal: str) -> str:
    """Where `principal`'s replies arrive (nats-py's `inbox_prefix`); only it may subscribe there."""
    return f"_INBOX.{principal}"


def serves(*subjects: str) -> Grants:
    """Request/reply subjects this principal answers (in its queue group)."""
    return Grants(subscribe=frozenset(subjects), responds=True)


def asks(*subjects: str) -> Grants:
    """Request/reply subjects this principal sends requests to."""
    return _pub(*subjects)


def announces(*subjects: str) -> Grants:
    return _pub(*subjects)


def hears(*subjects: str) -> Grants:
    return _sub(*subjects)


def micro_service(name: str) -> Grants:
    """The `$SRV.PING/INFO/STATS` discovery subjects nats micro subscribes for service `name`."""
    return serves("$SRV.*", f"$SRV.*.{name}", f"$SRV.*.{name}.*")


def _api(*paths: str) -> Grants:
    return _pub(*(f"$JS.API.{path}" for path in paths))


def _stream_reader(stream: str) -> Grants:
    """Look a stream up, read single messages, and watch it (ordered consumers, as KV watches)."""
    return _api(
        f"STREAM.INFO.{stream}",
        f"STREAM.MSG.GET.{stream}",
        f"DIRECT.GET.{stream}",
        f"DIRECT.GET.{stream}.>",
        f"CONSUMER.CREATE.{stream}",
        f"CONSUMER.CREATE.{stream}.>",
        f"CONSUMER.INFO.{stream}.>",
        f"CONSUMER.DELETE.{stream}.>",
    ) + _pub(f"$JS.FC.{stream}.>")


def kv_reader(bucket: str) -> Grants:
    """Read and watch a bucket, and create it if it is missing: whoever starts first creates it
    (lexora_runtime.model_registry), so a gateway never waits on the operator. A create of a
    bucket that exists changes nothing."""
    return _stream_reader(f"KV_{bucket}") + _api(f"STREAM.CREATE.KV_{bucket}")


def kv_writer(bucket: str) -> Grants:
    """Read, create the bucket if missing, and put/update/delete its keys."""
    return kv_reader(bucket) + _pub(f"$KV.{bucket}.>")


def usage_stream_keeper() -> Grants:
    """Create the usage stream and its consumers as this version configures them
    (`lexora_runtime.bus.ensure_usage_stream`, called by every service that touches it)."""
    consumers = (s.BILLING_SETTLE_CONSUMER, s.USAGE_RECORD_CONSUMER)
    return _api(
        f"STREAM.INFO.{s.USAGE_STREAM}",
        f"STREAM.CREATE.{s.USAGE_STREAM}",
        f"STREAM.UPDATE.{s.USAGE_STREAM}",
        *(f"CONSUMER.CREATE.{s.USAGE_STREAM}.{c}" for c in consumers),
        *(f"CONSUMER.CREATE.{s.USAGE_STREAM}.{c}.>" for c in consumers),
        *(f"CONSUMER.DURABLE.CREATE.{s.USAGE_STREAM}.{c}" for c in consumers),
    )


def usage_publisher() -> Grants:
    return usage_stream_keeper() + _pub(s.USAGE_REQUEST_COMPLETED)


def usage_consumer(durable: str) -> Grants:
    """Pull from one durable consumer of the usage stream and ack what it handled."""
    return (
        usage_stream_keeper()
        + _api(
            f"CONSUMER.INFO.{s.USAGE_STREAM}.{durable}",
            f"CONSUMER.MSG.NEXT.{s.USAGE_STREAM}.{durable}",
        )
        + _pub(f"$JS.ACK.{s.USAGE_STREAM}.{durable}.>")
    )


def health_of(*services: str) -> Grants:
    return asks(*(f"{service}.v1.health.get" for service in services))


PERMISSIONS: dict[str, Grants] = {
    GATEWAY: (
        asks(
            s.AUTH_KEY_VERIFY,
            s.AUTH_KEY_LIST,  # /v1/key: the caller's own keys
            # the console's account API (docs/console.md): keys, users, sessions, accounts
            s.AUTH_KEY_CREATE,
            s.AUTH_KEY_REVOKE,
            accounts.AUTH_USER_SIGNUP,
            accounts.AUTH_USER_UPDATE,
            accounts.AUTH_SESSION_CREATE,
            accounts.AUTH_SESSION_VERIFY,
            accounts.AUTH_SESSION_DELETE,
            accounts.AUTH_SESSION_EXTERNAL,
            accounts.AUTH_SIGNUP_MODE_GET,
            accounts.AUTH_INVITATION_CREATE,
            accounts.AUTH_ACCOUNT_GET,
            accounts.AUTH_ACCOUNT_SEARCH,
            accounts.AUTH_ACCOUNT_UPDATE,
            # an admin's grant, which billing checks with auth: never the plain grant
            s.BILLING_CREDITS_ADMIN_GRANT,
            usage_api.BILLING_TRANSACTIONS_LIST,
            usage_api.USAGE_KEY_SPEND_LIST,
            s.BILLING_CREDITS_RESERVE,
            s.BILLING_LEASE_ACQUIRE,  # credit leases: the gateway asks, billing serves
            s.BILLING_LEASE_RETURN,
            s.BILLING_BALANCE_GET,
            usage_api.BILLING_CREDITS_SUMMARY,
            usage_api.BILLING_KEY_SPEND_GET,
            topups.BILLING_PACKAGES_LIST,
            topups.BILLING_CHECKOUT_CREATE,
            topups.BILLING_WEBHOOK_STRIPE,
            usage_api.USAGE_REPORT_GET,
            s.ROUTER_GENERATION_START,
            s.ROUTER_EMBEDDING_CREATE,
            s.ROUTER_IMAGE_CREATE,
            s.ROUTER_TOKENS_COUNT,
        )
        + announces(s.ROUTER_GENERATION_CANCEL)
        + hears(s.AUTH_KEY_REVOKED, s.BILLING_LEASE_RECALLED)
        + health_of(AUTH, BILLING, USAGE, ROUTER)
        + usage_publisher()  # the outcome of a job no router took
        + kv_reader(s.MODEL_REGISTRY_BUCKET)
        + kv_reader(s.ENDPOINT_HEALTH_BUCKET)
        + kv_writer(s.RATE_LIMITS_BUCKET)
        + kv_writer(s.RESPONSES_BUCKET)
    ),
    AUTH: (
        serves(
            s.AUTH_KEY_VERIFY,
            s.AUTH_ACCOUNT_CREATE,
            s.AUTH_KEY_CREATE,
            s.AUTH_KEY_LIST,
            s.AUTH_KEY_REVOKE,
            s.AUTH_HEALTH,
            accounts.AUTH_USER_SIGNUP,
            accounts.AUTH_USER_CREATE,
            accounts.AUTH_USER_UPDATE,
            accounts.AUTH_SESSION_CREATE,
            accounts.AUTH_SESSION_VERIFY,
            accounts.AUTH_SESSION_DELETE,
            accounts.AUTH_SESSION_EXTERNAL,
            accounts.AUTH_SIGNUP_MODE_GET,
            accounts.AUTH_INVITATION_CREATE,
            accounts.AUTH_ACCOUNT_GET,
            accounts.AUTH_ACCOUNT_SEARCH,
            accounts.AUTH_ACCOUNT_UPDATE,
        )
        + announces(s.AUTH_KEY_REVOKED)
        + micro_service(AUTH)
    ),
    BILLING: (
        serves(
            s.BILLING_CREDITS_RESERVE,
            s.BILLING_LEASE_ACQUIRE,
            s.BILLING_LEASE_RETURN,
            s.BILLING_CREDITS_GRANT,
            s.BILLING_CREDITS_ADMIN_GRANT,
            s.BILLING_BALANCE_GET,
            usage_api.BILLING_TRANSACTIONS_LIST,
            usage_api.BILLING_CREDITS_SUMMARY,
            usage_api.BILLING_KEY_SPEND_GET,
            topups.BILLING_PACKAGES_LIST,
            topups.BILLING_CHECKOUT_CREATE,
            topups.BILLING_WEBHOOK_STRIPE,
            s.BILLING_HEALTH,
        )
        + asks(s.AUTH_KEY_VERIFY, accounts.AUTH_SESSION_VERIFY)  # an admin grant's credential
        + announces(s.BILLING_LEASE_RECALLED)
        + micro_service(BILLING)
        + usage_consumer(s.BILLING_SETTLE_CONSUMER)
    ),
    USAGE: (
        serves(
            usage_api.USAGE_REPORT_GET,
            usage_api.USAGE_KEY_SPEND_LIST,
            s.USAGE_HEALTH,
        )
        + micro_service(USAGE)
        + usage_consumer(s.USAGE_RECORD_CONSUMER)
    ),
    ROUTER: (
        serves(
            s.ROUTER_GENERATION_START,
            s.ROUTER_EMBEDDING_CREATE,
            s.ROUTER_IMAGE_CREATE,
            s.ROUTER_TOKENS_COUNT,
            s.ROUTER_HEALTH,
        )
        + hears(s.ROUTER_GENERATION_CANCEL)
        + announces(s.ROUTER_MODEL_DEMANDED)
        + micro_service(ROUTER)
        + _pub(f"{inbox_prefix(GATEWAY)}.>")  # a job's chunks stream to the gateway's job inbox
        + usage_publisher()
        + kv_reader(s.MODEL_REGISTRY_BUCKET)
        + kv_writer(s.ENDPOINT_HEALTH_BUCKET)
    ),
    OPERATOR: kv_writer(s.MODEL_REGISTRY_BUCKET) + hears(s.ROUTER_MODEL_DEMANDED),
    ADMIN: (
        asks(
            s.AUTH_ACCOUNT_CREATE,
            s.AUTH_KEY_CREATE,
            s.AUTH_KEY_LIST,
            s.AUTH_KEY_REVOKE,
            s.BILLING_CREDITS_GRANT,
            s.BILLING_BALANCE_GET,
            accounts.AUTH_USER_CREATE,  # create-user
            accounts.AUTH_INVITATION_CREATE,  # invite
        )
    ),
    # `lexora dev` itself (never in the chart): publishes the local catalog, waits for the services
    # and for the models' warm-up probes.
    DEV: (
        kv_writer(s.MODEL_REGISTRY_BUCKET)
        + kv_reader(s.ENDPOINT_HEALTH_BUCKET)
        + health_of(AUTH, BILLING, USAGE, ROUTER)
    ),
}


def with_inbox(principal: str, grants: Grants) -> Grants:
    """`grants` plus the principal's own reply inbox, which every user gets when rendered."""
    return grants + _sub(f"{inbox_prefix(principal)}.>")


def password_variable(principal: str) -> str:
    """The environment variable nats-server reads `principal`'s password from."""
    return f"LEXORA_NATS_PASSWORD_{principal.upper().replace('-', '_')}"


def render_authorization(principals: Iterable[str], unrestricted: Iterable[str] = ()) -> str:
    """nats-server's `authorization` block: one user per principal of `PERMISSIONS`, its password
    read from `password_variable(principal)` in the server's environment (so the block holds no
    secret), plus `unrestricted` users with every permission (the test harness only)."""
    users = [_render_user(p, with_inbox(p, PERMISSIONS[p])) for p in principals]
    users += [_render_user(p, None) for p in unrestricted]
    body = "\n".join(users)
    return f"authorization {{\n  users = [\n{body}\n  ]\n}}\n"


def _render_user(principal: str, grants: Grants | None) -> str:
    lines = [
        "    {",
        f'      user: "{principal}"',
        f"      password: ${password_variable(principal)}",
    ]
    if grants is not None:
        lines += [
            "      permissions: {",
            f"        publish: {{ allow: {_list(grants.publish)} }}",
            f"        subscribe: {{ allow: {_list(grants.subscribe)} }}",
        ]
        if grants.responds:
            lines.append("        allow_responses: true")
        lines.append("      }")
    lines.append("    }")
    return "\n".join(lines)


def _list(subjects: Iterable[str]) -> str:
    items = ",\n".join(f'          "{subject}"' for subject in sorted(subjects))
    return f"[\n{items}\n        ]" if items else "[]"


def granted(subject: str, patterns: Iterable[str]) -> bool:
    """Whether `subject` matches one of the NATS `patterns` (`*` one token, `>` the rest)."""
    return any(_matches(subject.split("."), pattern.split(".")) for pattern in patterns)


def _matches(tokens: list[str], pattern: list[str]) -> bool:
    for i, want in enumerate(pattern):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens) or (want != "*" and want != tokens[i]):
            return False
    return len(tokens) == len(pattern)


def grants_of(principal: str, table: Mapping[str, Grants] = PERMISSIONS) -> Grants:
    """Everything `principal` may do, as rendered."""
    return with_inbox(principal, table[principal])


# What a cluster runs: every principal but the local stack's own tooling.
CHART_PRINCIPALS = tuple(p for p in PERMISSIONS if p != DEV)

if __name__ == "__main__":  # regenerates the chart's copy; tests/unit/test_nats_permissions_table.py checks it
    print(render_authorization(CHART_PRINCIPALS), end="")
