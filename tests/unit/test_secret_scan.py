"""The end-of-session scan finds secrets in log lines without repeating them, and only them."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import pytest

from lexora_auth.keys import display_prefix, new_api_key
from support import secret_scan


def test_keys_peppers_and_remembered_secrets_are_found_and_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    # Outside pytest's temporary directories, and forgotten afterwards: the session's own scan
    # (tests/conftest.py) must not find the secrets this test plants.
    monkeypatch.setattr(secret_scan, "_remembered", dict(secret_scan._remembered))
    with tempfile.TemporaryDirectory() as planted:
        check_planted_secrets(Path(planted))


def check_planted_secrets(tmp_path: Path) -> None:
    key = new_api_key("sk-lexora-")
    pepper = secrets.token_urlsafe(32)
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "key-pepper").write_text(pepper)
    secret_scan.remember("password", "correct horse battery staple")
    logs = tmp_path / "stack" / "logs"
    logs.mkdir()
    (logs / "gateway.log").write_text(
        f'{{"msg": "listed {display_prefix("sk-lexora-", key)}"}}\n'
        f'{{"msg": "verified {key}"}}\n'
        f'{{"msg": "hashing with {pepper}"}}\n'
        '{"msg": "signed up with correct horse battery staple"}\n'
        '{"msg": "sk-lexora-not-a-real-key"}\n'
    )
    found = secret_scan.leaks([tmp_path])
    what = [line.split(": ", 1)[1] for line in found]
    assert what[:2] == ["an API key", "key-pepper of stack"] and what[2].startswith("password (")
    assert [line.split(":")[1] for line in found] == ["2", "3", "4"]
    assert not any(key in line or pepper in line for line in found)
