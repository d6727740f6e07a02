"""The official openai npm package (Node), with only baseURL and apiKey changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are not installed: the Node SDK test needs them")
    if not (NODE_DIR / "node_modules" / "openai").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "client.mjs"


def test_node_sdk_chats_streams_and_sees_errors(lexora: RunningStack, node_client: Path) -> None:
    account = lexora.create_account()
    result = subprocess.run(
        ["node", str(node_client)],
        env={
            **os.environ,
            "LEXORA_BASE_URL": lexora.base_url,
            "LEXORA_API_KEY": account.api_key,
            "LEXORA_MODEL": LOCAL_CHAT_MODEL,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["text"] and seen["streamed"] == seen["text"]
    assert seen["chunks"] > 2 and seen["finish_reason"] in ("stop", "length")
    assert seen["usage"]["total_tokens"] == seen["usage"]["prompt_tokens"] + seen["usage"]["completion_tokens"]
    assert seen["error"] == {"status": 404, "code": "model_not_found", "type": "invalid_request_error"}
