"""The local stack's NATS users: a password per principal made once in the state directory
(owner-only), found there by `lexora admin`, and handed to each service in its environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lexora_cli.admin import nats_access_for_admin
from lexora_contracts.nats_permissions import PERMISSIONS
from lexora_dev import stack


def test_passwords_are_made_once_and_kept_owner_only(tmp_path: Path) -> None:
    first = stack.local_nats_users(tmp_path)
    assert set(first.passwords) == set(PERMISSIONS)
    assert len(set(first.passwords.values())) == len(PERMISSIONS)
    assert all(p.isalpha() and len(p) == 32 for p in first.passwords.values())
    assert stat.S_IMODE((tmp_path / "nats-users.json").stat().st_mode) == 0o600
    again = stack.local_nats_users(tmp_path, unrestricted=("tests",))
    assert {p: again.passwords[p] for p in PERMISSIONS} == first.passwords
    assert "tests" in again.passwords


def test_the_server_config_names_variables_and_its_environment_holds_the_passwords(tmp_path: Path) -> None:
    users = stack.local_nats_users(tmp_path, unrestricted=("tests",))
    config = users.authorization()
    assert not any(password in config for password in users.passwords.values())
    assert users.server_env()["LEXORA_NATS_PASSWORD_GATEWAY"] == users.passwords["gateway"]
    tests_entry = config.split('user: "tests"')[1]
    assert "permissions" not in tests_entry  # the test harness's user alone is unrestricted


def test_each_service_gets_its_own_user(tmp_path: Path) -> None:
    users = stack.local_nats_users(tmp_path)
    config = stack.ServiceConfig("nats://127.0.0.1:1", "postgresql+asyncpg://x", tmp_path, 0, nats_users=users)
    env = config.env_for("billing")
    assert env["LEXORA_NATS_USER"] == "billing"
    assert env["LEXORA_NATS_PASSWORD"] == users.passwords["billing"]


def test_lexora_admin_finds_the_local_admin_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = stack.local_nats_users(tmp_path)
    monkeypatch.setenv("LEXORA_STATE_DIR", str(tmp_path))
    for name in ("LEXORA_NATS_USER", "LEXORA_NATS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    access = nats_access_for_admin()
    assert (access.user, access.password) == ("admin", users.passwords["admin"])
    assert users.passwords["admin"] not in repr(access)
    monkeypatch.setenv("LEXORA_NATS_USER", "admin")
    monkeypatch.setenv("LEXORA_NATS_PASSWORD", "from-the-environment")
    assert nats_access_for_admin().password == "from-the-environment"
