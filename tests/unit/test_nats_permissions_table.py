"""The NATS permissions table (lexora_contracts.nats_permissions) against the code: a subject a
service uses but is not granted fails here, before nats-server would refuse it in production.

The subjects a package uses are read from its source: the subject constants it names itself, and
those of the service clients' methods it calls (`BillingClient.grant` → billing.v1.credits.grant).
JetStream use (streams, KV buckets) is checked at run time instead: every e2e stack runs with these
permissions and fails if nats-server refused anything (support.stack.running_stack).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lexora_contracts import nats_permissions, subjects, topups, usage_api
from lexora_contracts.nats_permissions import CHART_PRINCIPALS, PERMISSIONS, granted, grants_of, render_authorization

REPO = Path(__file__).resolve().parents[2]
SUBJECT_MODULES = (subjects, usage_api, topups)
SUBJECT = re.compile(r"^[a-z]+\.v1\.[a-z]+\.[a-z]+$")

# Where each principal's code lives (files or package folders).
CODE = {
    "gateway": ["services/lexora_gateway"],
    "auth": ["services/lexora_auth"],
    "billing": ["services/lexora_billing"],
    "usage": ["services/lexora_usage"],
    "router": ["services/lexora_router"],
    "operator": ["operator/lexora_operator"],
    "admin": ["services/lexora_cli/admin.py", "services/lexora_cli/accounts.py"],
    "dev": ["services/lexora_dev"],
}
CLIENTS = ("lexora_auth", "lexora_billing", "lexora_usage", "lexora_router")


def subject_constants() -> dict[str, str]:
    """Every request/reply or event subject the contracts define: constant name → subject."""
    found: dict[str, str] = {}
    for module in SUBJECT_MODULES:
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and SUBJECT.match(value):
                found[name] = value
    return found


def _files(principal: str) -> list[Path]:
    paths = [REPO / p for p in CODE[principal]]
    return [f for p in paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]


def _constants_named(tree: ast.AST) -> set[str]:
    known = subject_constants()
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return {known[name] for name in names if name in known}


def client_methods(service: str) -> dict[str, set[str]]:
    """The subjects each method of a service's client module sends to."""
    tree = ast.parse((REPO / "services" / service / "client.py").read_text())
    methods: dict[str, set[str]] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)):
            methods.setdefault(fn.name, set()).update(_constants_named(fn))
    return methods


def subjects_used(principal: str) -> dict[str, set[str]]:
    """Subjects `principal`'s code names (in its own modules, not its client module's) and those
    its calls of other services' clients send to (a client imported anywhere in its code, a method
    of that name called or referred to anywhere in it), each with where it was found."""
    used: dict[str, set[str]] = {}
    imported: set[str] = set()
    called: dict[str, set[str]] = {}
    for path in _files(principal):
        if path.name == "client.py" and path.parent.name in CLIENTS:
            continue  # a service's client is the code of its callers, checked there
        tree = ast.parse(path.read_text())
        where = str(path.relative_to(REPO))
        for subject in _constants_named(tree):
            used.setdefault(subject, set()).add(where)
        imported |= {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.module.endswith(".client")
        }
        for n in ast.walk(tree):  # called, or handed on (KeyVerifier(..., auth.verify_key))
            if isinstance(n, ast.Attribute):
                called.setdefault(n.attr, set()).add(where)
    for service in sorted(imported & set(CLIENTS)):
        for method, sent in client_methods(service).items():
            for subject in sent if method in called else ():
                used.setdefault(subject, set()).update(f"{w} ({service}.client .{method})" for w in called[method])
    return used


@pytest.mark.parametrize("principal", sorted(CODE))
def test_every_subject_a_principals_code_uses_is_granted_to_it(principal: str) -> None:
    grants = grants_of(principal)
    missing = [
        f"{subject} (used in {', '.join(sorted(where))})"
        for subject, where in sorted(subjects_used(principal).items())
        if not granted(subject, grants.publish | grants.subscribe)
    ]
    assert not missing, f"add to PERMISSIONS[{principal!r}] in lexora_contracts/nats_permissions.py:\n" + "\n".join(
        missing
    )


def test_every_subject_is_served_by_someone_and_sent_by_someone() -> None:
    for name, subject in subject_constants().items():
        senders = [p for p in PERMISSIONS if granted(subject, grants_of(p).publish)]
        receivers = [p for p in PERMISSIONS if granted(subject, grants_of(p).subscribe)]
        if granted(subject, subjects.USAGE_STREAM_SUBJECTS):
            receivers = ["the JetStream stream"]  # its consumers pull (usage_consumer)
        assert senders and receivers, f"{name} ({subject}): senders {senders}, receivers {receivers}"


def test_each_request_subject_is_answered_by_its_own_service_only() -> None:
    """`<service>.v1.…` requests are served by that service alone: nobody else may subscribe to
    them and answer in its place. (Events, like auth.v1.key.revoked, go the other way.)"""
    events = {
        subjects.AUTH_KEY_REVOKED,
        subjects.BILLING_LEASE_RECALLED,
        subjects.ROUTER_GENERATION_CANCEL,
        subjects.ROUTER_MODEL_DEMANDED,
        subjects.USAGE_REQUEST_COMPLETED,
    }
    for subject in set(subject_constants().values()) - events:
        receivers = {p for p in PERMISSIONS if granted(subject, grants_of(p).subscribe)}
        assert receivers == {subject.split(".")[0]}, (subject, receivers)


def test_gateways_ask_for_credit_leases_and_hear_recalls_that_only_billing_sends() -> None:
    for subject in (subjects.BILLING_LEASE_ACQUIRE, subjects.BILLING_LEASE_RETURN):
        assert [p for p in PERMISSIONS if granted(subject, grants_of(p).publish)] == ["gateway"]
        assert [p for p in PERMISSIONS if granted(subject, grants_of(p).subscribe)] == ["billing"]
    recalled = subjects.BILLING_LEASE_RECALLED
    assert [p for p in PERMISSIONS if granted(recalled, grants_of(p).publish)] == ["billing"]
    assert [p for p in PERMISSIONS if granted(recalled, grants_of(p).subscribe)] == ["gateway"]


def test_only_the_admin_may_grant_credit() -> None:
    assert [p for p in PERMISSIONS if granted(subjects.BILLING_CREDITS_GRANT, grants_of(p).publish)] == ["admin"]


def test_only_a_principal_may_read_its_own_inbox() -> None:
    for principal in PERMISSIONS:
        inboxes = {s for s in grants_of(principal).subscribe if s.startswith("_INBOX")}
        assert inboxes == {f"{nats_permissions.inbox_prefix(principal)}.>"}, (principal, inboxes)


def test_nobody_may_delete_or_purge_a_stream() -> None:
    for principal in PERMISSIONS:
        for verb in ("DELETE", "PURGE"):
            subject = f"$JS.API.STREAM.{verb}.{subjects.USAGE_STREAM}"
            assert not granted(subject, grants_of(principal).publish), (principal, subject)
            registry = f"$JS.API.STREAM.{verb}.KV_{subjects.MODEL_REGISTRY_BUCKET}"
            assert not granted(registry, grants_of(principal).publish), (principal, registry)


@pytest.mark.parametrize(
    ("subject", "pattern", "matches"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.*.c", True),
        ("a.b.c", "a.>", True),
        ("a", "a.>", False),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
        ("$SRV.PING.auth", "$SRV.*.auth", True),
    ],
)
def test_subject_patterns_match_as_nats_matches_them(subject: str, pattern: str, matches: bool) -> None:
    assert granted(subject, [pattern]) is matches


def test_the_chart_carries_the_authorization_the_table_renders() -> None:
    """charts/lexora/files/nats-authorization.conf is generated from the table
    (`python -m lexora_contracts.nats_permissions > charts/lexora/files/nats-authorization.conf`)."""
    chart_file = REPO / "charts" / "lexora" / "files" / "nats-authorization.conf"
    regenerate = f"regenerate it: python -m lexora_contracts.nats_permissions > {chart_file.relative_to(REPO)}"
    assert chart_file.read_text() == render_authorization(CHART_PRINCIPALS), regenerate


def test_the_rendered_block_holds_no_password() -> None:
    block = render_authorization(PERMISSIONS)
    assert "password: $LEXORA_NATS_PASSWORD_GATEWAY" in block
    assert re.findall(r"password: (\S+)", block) == [f"${nats_permissions.password_variable(p)}" for p in PERMISSIONS]
