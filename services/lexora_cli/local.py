"""The local stack's state directory (`LEXORA_STATE_DIR`, default `.lexora`), the file in which
a running `lexora dev` tells the other commands where it is (`stack.json`), and the passwords of
its NATS users (`nats-users.json`, made by `lexora dev`, readable by its owner only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_STATE_DIR = ".lexora"
DEFAULT_NATS_PORT = 4222


def state_dir_from_env() -> Path:
    return Path(os.environ.get("LEXORA_STATE_DIR", DEFAULT_STATE_DIR)).resolve()


def write_stack_file(state_dir: Path, info: dict[str, str]) -> None:
    (state_dir / "stack.json").write_text(json.dumps(info, indent=2))


def read_stack_file(state_dir: Path) -> dict[str, str]:
    path = state_dir / "stack.json"
    return json.loads(path.read_text()) if path.exists() else {}


def remove_stack_file(state_dir: Path) -> None:
    (state_dir / "stack.json").unlink(missing_ok=True)


NATS_USERS_FILE = "nats-users.json"


def read_nats_passwords(state_dir: Path) -> dict[str, str]:
    """The local stack's NATS password of each principal; empty before `lexora dev` first ran."""
    path = state_dir / NATS_USERS_FILE
    return json.loads(path.read_text()) if path.exists() else {}
