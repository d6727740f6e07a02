"""aider itself (PyPI aider-chat, pinned; in a virtualenv of its own, .venv/aider, made by
scripts/bootstrap.sh: it pins litellm, openai and many more) against the running stack, configured
as docs/integrations.md tells a user: OPENAI_API_BASE=<gateway>/v1, OPENAI_API_KEY=<a Lexora key>,
`--model openai/<model id>` (LiteLLM's OpenAI-compatible provider, chat completions, streamed).

One `aider --message` run edits a small file in a temporary directory with the "whole" edit format
and no repository map, a request of ~750 tokens that the local 8,192-token model holds. What the
135M model writes back is its own business: the test asserts that aider finished, that its request
was answered, and that the account was charged exactly what the gateway reported. What aider printed
goes to the test's output (pytest -s)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

REPO = Path(__file__).resolve().parents[2]
AIDER = REPO / ".venv" / "aider" / "bin" / "aider"
PRICE = 40_000  # micro-USD per 1M tokens, input and output, for the local model
# One aider run: a few hundred tokens from the local model at ~60 tokens/s on 2 cores, plus
# aider's start-up (~5 s).
RUN_TIMEOUT_S = 300
MAX_TOKENS = 128
SOURCE = 'def greet(name):\n    return "Hello " + name\n'


def aider_binary() -> Path:
    if AIDER.is_file() and os.access(AIDER, os.X_OK):
        return AIDER
    pytest.fail(
        f"aider is not installed at {AIDER}: run scripts/bootstrap.sh "
        "(it installs the pinned aider-chat into the virtualenv .venv/aider)"
    )


def test_aider_message_edits_a_file_through_the_gateway_and_is_charged(lexora: RunningStack, tmp_path: Path) -> None:
    account = lexora.create_account()
    before = lexora.balance(account.account_id).balance_micro
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    (project / "greet.py").write_text(SOURCE)
    # What aider (through LiteLLM) should know of the model: its context and Lexora's price, so
    # that it neither warns about an unknown model nor shows a cost other than the gateway's.
    metadata = home / "model-metadata.json"
    metadata.write_text(
        json.dumps(
            {
                f"openai/{LOCAL_CHAT_MODEL}": {
                    "max_input_tokens": 8192,
                    "max_output_tokens": 8192,
                    "input_cost_per_token": PRICE / 1e6 / 1e6,
                    "output_cost_per_token": PRICE / 1e6 / 1e6,
                    "litellm_provider": "openai",
                    "mode": "chat",
                }
            }
        )
    )
    # aider sends no max_tokens (the gateway's default, 512, applies) and temperature 0, at which a
    # 135M model repeats itself to the limit ("You must return a file listing …" over and over):
    # aider's own model settings cap the answer (plenty for a whole-file listing of a two-line
    # file) and add a frequency penalty, with which the model ends its answer by itself.
    settings = home / "model-settings.yml"
    settings.write_text(
        f"- name: openai/{LOCAL_CHAT_MODEL}\n"
        "  edit_format: whole\n"
        "  use_repo_map: false\n"
        "  extra_params:\n"
        f"    max_tokens: {MAX_TOKENS}\n"
        "    frequency_penalty: 1.0\n"
    )
    args = [
        "--model",
        f"openai/{LOCAL_CHAT_MODEL}",
        "--model-metadata-file",
        str(metadata),
        "--model-settings-file",
        str(settings),
        "--message",
        "Add a docstring to the greet function.",
        "greet.py",
        "--edit-format",
        "whole",
        "--map-tokens",
        "0",
        "--no-git",
        "--yes-always",
        "--no-auto-commits",
        "--no-check-update",
        "--no-analytics",
        "--no-show-model-warnings",
        "--no-show-release-notes",
        "--no-pretty",
        "--no-fancy-input",
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no user settings (~/.aider.conf.yml), caches or history of the user's
        "OPENAI_API_BASE": lexora.base_url,
        "OPENAI_API_KEY": account.api_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # LiteLLM's bundled cost map: no fetch at import
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [str(aider_binary()), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    print(
        f"\n$ aider {' '.join(args)}\n[exit {result.returncode}]\n[stdout]\n{result.stdout}\n[stderr]\n{result.stderr}"
    )
    print(f"[greet.py afterwards]\n{(project / 'greet.py').read_text()}")
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    # No error from the API (LiteLLM names its exceptions litellm.<Error>) and no retry after one.
    assert "litellm." not in printed and "Retrying in" not in printed, printed
    # aider reports its token count and cost (its own estimate when streaming: it counts with its
    # tokenizer, not from the usage), or, for an answer cut at max_tokens (finish_reason "length"),
    # that the model hit its token limit.
    assert "Tokens:" in result.stdout or "hit a token limit" in result.stdout, result.stdout
    served, rows = lexora.wait_for_served(account.account_id, "/v1/chat/completions")
    assert served, [(r["endpoint"], r["status_code"], r["error_type"], r["completion_tokens"]) for r in rows]
    assert all(r["status_code"] == 200 for r in rows), rows
    for row in served:
        assert row["model"] == LOCAL_CHAT_MODEL
        assert 0 < row["prompt_tokens"] < 2_000, row  # no repo map: the edit prompt and the file
        assert 0 < row["completion_tokens"] <= MAX_TOKENS, row
        assert row["cost_pico"] == request_cost_pico(row["prompt_tokens"], row["completion_tokens"], PRICE, PRICE) > 0
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0
    assert balance.balance_micro < before
    lexora.assert_ledger_consistent(account.account_id)
