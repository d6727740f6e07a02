"""NATS with a user per service (lexora_contracts.nats_permissions), on a real nats-server started
with the generated authorization and real auth and billing processes: only the admin CLI may grant
credit; the gateway's credentials are refused, with a permissions violation, before billing sees
the request. The whole stack under these permissions is every other e2e test (running_stack)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import trustme
from nats.aio.client import Client as NATS

from lexora_billing.client import BillingClient
from lexora_contracts import subjects
from lexora_contracts.errors import Forbidden, LexoraError, ServiceUnavailable, Unauthorized
from lexora_contracts.nats_permissions import ADMIN, DEV, GATEWAY, inbox_prefix
from lexora_dev import stack
from lexora_dev.processes import ManagedProcess, free_port, tcp_open, wait_until
from lexora_runtime.bus import NatsAccess, connect
from support.postgres import fresh_database


@dataclass
class SecuredBus:
    nats_url: str
    users: stack.NatsUsers
    state_dir: Path

    def admin_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lexora_cli", "admin", *args],
            env={**os.environ, "LEXORA_NATS_URL": self.nats_url, **self.users.env_for(ADMIN)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def nats_log(self) -> str:
        return (self.state_dir / "logs" / "nats.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[SecuredBus]:
    state_dir = tmp_path_factory.mktemp("nats-permissions")
    port = free_port()
    users = stack.local_nats_users(state_dir)
    processes: list[ManagedProcess] = [stack.start_nats(state_dir, port, users=users)]
    nats_url = f"nats://127.0.0.1:{port}"
    database_url = fresh_database(postgres_url, "natsperm")
    stack.prepare_database(database_url)
    config = stack.ServiceConfig(nats_url, database_url, state_dir, gateway_port=0, nats_users=users)
    try:
        for service, health in (("auth", subjects.AUTH_HEALTH), ("billing", subjects.BILLING_HEALTH)):
            processes.append(stack.start_service(service, config))
            stack.wait_for_service(nats_url, health, processes[-1], timeout=60, access=users.access(DEV))
        yield SecuredBus(nats_url, users, state_dir)
    finally:
        for process in reversed(processes):
            process.stop()


async def connected_as(bus: SecuredBus, principal: str, errors: list[Exception]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    access = bus.users.access(principal)
    return await nats.connect(bus.nats_url, error_cb=on_error, **access.options())


def create_account(bus: SecuredBus) -> str:
    result = bus.admin_cli("create-key", "--credits", "1")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["account_id"])


def test_only_the_admin_cli_may_grant_credit(bus: SecuredBus) -> None:
    account_id = create_account(bus)

    async def grant_as_gateway() -> tuple[Exception, list[Exception], int]:
        errors: list[Exception] = []
        nc = await connected_as(bus, GATEWAY, errors)
        try:
            with pytest.raises(ServiceUnavailable) as refused:
                await BillingClient(nc).grant(
                    account_id, 1_000_000_000, idempotency_key="steal-1", actor="gateway", reason="x", timeout=2
                )
            # The gateway may still ask billing what it needs: its request/reply works.
            balance = await BillingClient(nc).balance(account_id)
            return refused.value, errors, balance.balance_micro
        finally:
            await nc.close()

    refused, errors, balance_micro = asyncio.run(grant_as_gateway())
    assert "did not answer" in str(refused)  # nats-server dropped it: billing never saw it
    assert any(f'permissions violation for publish to "{subjects.BILLING_CREDITS_GRANT}"' in str(e) for e in errors)
    assert balance_micro == 1_000_000  # the $1 the admin granted at creation, nothing more
    assert f'Publish Violation - Subject "{subjects.BILLING_CREDITS_GRANT}"' in bus.nats_log()

    granted = bus.admin_cli("grant", "--account", account_id, "--credits", "2.5", "--reason", "test")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["balance_micro"] == 3_500_000


def test_the_gateway_grants_only_on_an_administrators_own_credential(bus: SecuredBus) -> None:
    """The console's admin grant (billing.v1.credits.admingrant): billing asks auth whose credential
    came with it, so the gateway's NATS user cannot mint credit with an ordinary or forged key."""
    created = bus.admin_cli("create-key", "--credits", "1")
    assert created.returncode == 0, created.stderr
    ordinary = json.loads(created.stdout)
    made = subprocess.run(
        [sys.executable, "-m", "lexora_cli", "admin", "create-user", "--email", "root@example.com", "--admin"],
        env={
            **os.environ,
            "LEXORA_NATS_URL": bus.nats_url,
            "LEXORA_USER_PASSWORD": "correct horse battery staple",
            **bus.users.env_for(ADMIN),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    admin_key = bus.admin_cli("add-key", "--account", json.loads(made.stdout)["account_id"])
    assert admin_key.returncode == 0, admin_key.stderr

    async def grant_as_gateway(api_key: str, key: str) -> Exception | int:
        nc = await connected_as(bus, GATEWAY, [])
        try:
            balance = await BillingClient(nc).grant_as_admin(
                ordinary["account_id"], 2_000_000, idempotency_key=key, reason="console", api_key=api_key
            )
            return balance.balance_micro
        except LexoraError as exc:
            return exc
        finally:
            await nc.close()

    assert isinstance(asyncio.run(grant_as_gateway(ordinary["api_key"], "with-ordinary")), Forbidden)
    assert isinstance(asyncio.run(grant_as_gateway("sk-lexora-forged", "with-forged")), Unauthorized)
    assert asyncio.run(grant_as_gateway(json.loads(admin_key.stdout)["api_key"], "with-admin")) == 3_000_000


def test_a_service_cannot_answer_for_another_or_read_its_replies(bus: SecuredBus) -> None:
    async def subscribe_as_gateway(subject: str) -> list[Exception]:
        errors: list[Exception] = []
        nc = await connected_as(bus, GATEWAY, errors)
        try:
            await nc.subscribe(subject)
            for _ in range(50):  # the server's -ERR comes on its own time
                await nc.flush()
                if errors:
                    break
                await asyncio.sleep(0.1)
            return errors
        finally:
            await nc.close()

    for subject in (subjects.BILLING_CREDITS_GRANT, f"{inbox_prefix(ADMIN)}.>", "_INBOX.>"):
        errors = asyncio.run(subscribe_as_gateway(subject))
        expected = f'permissions violation for subscription to "{subject}"'.lower()
        assert any(expected in str(e).lower() for e in errors), (subject, errors)
        assert f'Subscription Violation - Subject "{subject}"' in bus.nats_log()


def test_the_server_refuses_a_client_without_its_password(bus: SecuredBus) -> None:
    async def attempt(access: NatsAccess) -> Exception:
        with pytest.raises(Exception) as refused:  # noqa: PT011 - nats-py raises its plain Error
            await nats.connect(bus.nats_url, allow_reconnect=False, connect_timeout=2, **access.options())
        return refused.value

    assert "Authorization Violation" in str(asyncio.run(attempt(NatsAccess())))
    assert "Authorization Violation" in str(asyncio.run(attempt(NatsAccess(GATEWAY, "not-its-password"))))


def test_services_connect_with_their_settings(bus: SecuredBus) -> None:
    """lexora_runtime.bus.connect with a service's NatsAccess: replies arrive in its own inbox."""

    async def ask_health() -> bytes:
        nc = await connect(bus.nats_url, "tests", bus.users.access(GATEWAY))
        try:
            return (await nc.request(subjects.BILLING_HEALTH, b"{}", timeout=5)).data
        finally:
            await nc.close()

    assert json.loads(asyncio.run(ask_health()))["status"] == "ok"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, tls.crt, tls.key)."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    paths = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    server.cert_chain_pems[0].write_to_path(str(paths[1]))
    server.private_key_pem.write_to_path(str(paths[2]))
    return paths


def test_over_tls_a_client_that_trusts_the_ca_connects_as_its_user(tmp_path: Path) -> None:
    """nats.tls in the chart: the server presents a certificate of the CA the clients are given
    (LEXORA_NATS_CA_FILE); permissions apply as without TLS."""
    ca, cert, key = _certificates(tmp_path)
    users = stack.local_nats_users(tmp_path)
    config = tmp_path / "nats.conf"
    tls = f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n  ca_file: "{ca}"\n}}\n'
    config.write_text(tls + users.authorization())
    port = free_port()
    argv = [stack.nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-c", str(config)]
    server = ManagedProcess("nats-tls", argv, tmp_path / "nats.log", env=users.server_env()).start()
    url = f"nats://127.0.0.1:{port}"
    try:
        wait_until(lambda: tcp_open(port), 20, "nats-server", server)

        async def attempt(access: NatsAccess) -> list[Exception]:
            errors: list[Exception] = []

            async def on_error(exc: Exception) -> None:
                errors.append(exc)

            nc = await nats.connect(url, allow_reconnect=False, error_cb=on_error, **access.options())
            try:
                await nc.publish(subjects.BILLING_CREDITS_GRANT, b"{}")
                for _ in range(50):
                    await nc.flush()
                    if errors:
                        break
                    await asyncio.sleep(0.1)
                return errors
            finally:
                await nc.close()

        gateway = users.access(GATEWAY)
        errors = asyncio.run(attempt(NatsAccess(gateway.user, gateway.password, str(ca))))
        assert any("permissions violation for publish" in str(e).lower() for e in errors), errors

        with pytest.raises(Exception) as untrusted:  # noqa: PT011 - the TLS handshake's own error
            asyncio.run(attempt(gateway))  # no CA given: the server's certificate is not trusted
        assert "CERTIFICATE_VERIFY_FAILED" in repr(untrusted.value) or "certificate" in str(untrusted.value).lower()
    finally:
        server.stop()
