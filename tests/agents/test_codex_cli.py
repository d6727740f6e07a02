"""Codex CLI itself (npm @openai/codex, pinned in tests/agents/package.json and installed by
scripts/bootstrap.sh) against the running stack, configured as docs/integrations.md tells a user: a
`[model_providers.lexora]` entry in `$CODEX_HOME/config.toml` (base_url = the gateway's /v1,
env_key naming the variable that holds a Lexora key, wire_api = "responses"), then `codex exec`.

Codex's default first request is ~21 KB of instructions, seven function tools, a namespace of
sub-agent tools and a hosted web_search (about 40 KB of JSON; the last two are not offered to the
model here, see docs/integrations.md): ~6,400 prompt tokens, which the local 8,192-token model holds
but takes about a minute to read on 2 cores. Trimmed with Codex's own settings (its instructions
replaced, its tools and context items off) the request is ~2 KB and is answered at once. A task
that brings more than the context holds (here a document piped on stdin, which `codex exec`
appends to the prompt) gets the Responses API's `context_length_exceeded`, which Codex recognizes
("Codex ran out of room in the model's context window. …"). What the agent printed goes to the
test's output (pytest -s)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

AGENTS_DIR = Path(__file__).resolve().parent
CODEX_PACKAGES = AGENTS_DIR / "node_modules" / "@openai"
PRICE = 40_000  # micro-USD per 1M tokens, input and output, for the local model
# One agent run: the local model answers at ~60 tokens/s on 2 cores.
RUN_TIMEOUT_S = 240
KEY_VARIABLE = "LEXORA_API_KEY"

# Codex's own settings that shrink its request to what a small model holds (each checked with
# `codex exec --strict-config`, which refuses keys this version does not know): its base
# instructions replaced by a file, no permissions/environment/skills/AGENTS.md context items, and
# no tools (shell and exec, view_image, request_user_input, update_plan, goals, sub-agents, apps,
# plugins, image generation, web search).
TRIMMED_SETTINGS = """
model_instructions_file = "{instructions}"
include_permissions_instructions = false
include_environment_context = false
project_doc_max_bytes = 0
web_search = "disabled"
model_context_window = 8192

[skills]
include_instructions = false

[agents]
enabled = false

[tools.experimental_request_user_input]
enabled = false

[tools.update_plan]
enabled = false

[features]
shell_tool = false
unified_exec = false
view_image = false
goals = false
apps = false
plugins = false
image_generation = false
"""

INSTRUCTIONS = "You are a helpful assistant. Answer in one short sentence.\n"


def codex_binary() -> Path:
    """The native binary npm put in the platform package (it runs from there even when npm's
    install-script policy skipped the wrapper's postinstall)."""
    binary = CODEX_PACKAGES / "codex-linux-x64" / "vendor" / "x86_64-unknown-linux-musl" / "bin" / "codex"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    pytest.fail(
        f"Codex CLI is not installed at {binary}: run scripts/bootstrap.sh "
        "(npm ci in tests/agents installs the pinned @openai/codex)"
    )


def codex_home(lexora: RunningStack, home: Path, *, trimmed: bool) -> Path:
    """A private CODEX_HOME whose config.toml points Codex at the gateway, as a user writes it."""
    home.mkdir(parents=True, exist_ok=True)
    config = [
        f'model = "{LOCAL_CHAT_MODEL}"',
        'model_provider = "lexora"',
        "check_for_update_on_startup = false",
        "[analytics]",
        "enabled = false",
        "[feedback]",
        "enabled = false",
    ]
    if trimmed:
        instructions = home / "instructions.md"
        instructions.write_text(INSTRUCTIONS)
        config.insert(3, TRIMMED_SETTINGS.format(instructions=instructions))
    config += [
        "[model_providers.lexora]",
        'name = "Lexora"',
        f'base_url = "{lexora.base_url}"',
        f'env_key = "{KEY_VARIABLE}"',
        'wire_api = "responses"',
        # A failed request is reported, not retried: the test sees the gateway's first answer.
        "request_max_retries = 0",
        "stream_max_retries = 0",
    ]
    (home / "config.toml").write_text("\n".join(config) + "\n")
    return home


def run_codex(
    api_key: str, home: Path, workdir: Path, prompt: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no user settings, no stored login: only what this test passes
        "CODEX_HOME": str(home),
        KEY_VARIABLE: api_key,
        "NO_COLOR": "1",
    }
    args = ["exec", "--strict-config", "--skip-git-repo-check", "--ephemeral", "--color", "never", prompt]
    result = subprocess.run(
        [str(codex_binary()), *args],
        cwd=workdir,
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    shown_err = result.stderr
    if stdin:  # Codex echoes the piped document inside <stdin>…</stdin>: shown collapsed
        shown_err = shown_err.replace(stdin.strip("\n"), f"[… the {len(stdin.splitlines())}-line document …]")
    print(f"\n$ codex {' '.join(args)}\n[exit {result.returncode}]\n[stdout]\n{result.stdout}\n[stderr]\n{shown_err}")
    return result


def test_codex_trimmed_to_the_model_answers_and_is_charged(lexora: RunningStack, tmp_path: Path) -> None:
    account = lexora.create_account()
    before = lexora.balance(account.account_id).balance_micro
    home = codex_home(lexora, tmp_path / "codex-home", trimmed=True)
    result = run_codex(account.api_key, home, tmp_path / "work", "Reply with the word ready.")
    assert result.returncode == 0, result.stdout + result.stderr
    # `codex exec` prints the agent's last message alone on stdout (its log goes to stderr).
    assert result.stdout.strip(), "Codex printed no answer"
    assert "ERROR" not in result.stderr, result.stderr
    served, rows = lexora.wait_for_served(account.account_id, "/v1/responses")
    assert served, [(r["endpoint"], r["status_code"], r["error_type"], r["completion_tokens"]) for r in rows]
    assert all(r["status_code"] == 200 for r in rows), rows
    for row in served:
        assert row["model"] == LOCAL_CHAT_MODEL
        # Trimmed, the whole request is a few hundred tokens (untrimmed: ~6,400).
        assert 0 < row["prompt_tokens"] < 1_000, row
        assert row["cost_pico"] == request_cost_pico(row["prompt_tokens"], row["completion_tokens"], PRICE, PRICE) > 0
    # The answer Codex printed is the one the gateway produced and charged for.
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0
    assert balance.balance_micro < before
    lexora.assert_ledger_consistent(account.account_id)


def test_codex_default_request_over_the_context_gets_the_context_length_error(
    lexora: RunningStack, tmp_path: Path
) -> None:
    account = lexora.create_account()
    before = lexora.balance(account.account_id).balance_micro
    home = codex_home(lexora, tmp_path / "codex-home", trimmed=False)
    # Codex's untrimmed request (~6,400 tokens) plus a 300-line log (~9,000 tokens) on stdin.
    log = "".join(
        f"2026-12-06T10:{i // 60:02d}:{i % 60:02d}Z worker-{i % 7} processed batch {i} of 300: "
        f"42 records, 0 errors, checksum {i * 7919 % 100003:05d}\n"
        for i in range(1, 301)
    )
    result = run_codex(account.api_key, home, tmp_path / "work", "Summarize the log below.", stdin=log)
    # Codex recognizes the Responses API's context_length_exceeded and says it in its words.
    assert result.returncode != 0
    assert "ran out of room in the model's context window" in result.stderr, result.stderr
    assert "stream disconnected" not in result.stderr and "unexpected status" not in result.stderr, result.stderr
    rows = lexora.wait_for_usage_rows(account.account_id, 1)
    assert rows and all(r["cost_pico"] == 0 for r in rows), rows
    assert all(r["status_code"] == 400 and r["error_type"] == "invalid_request_error" for r in rows), rows
    assert lexora.settled_balance(account.account_id).balance_micro == before
