"""Claude Code itself (npm @anthropic-ai/claude-code, pinned in tests/agents/package.json and
installed by scripts/bootstrap.sh) against the running stack, configured as docs/integrations.md
tells a user: ANTHROPIC_BASE_URL=<gateway>/api/, ANTHROPIC_AUTH_TOKEN=<a Lexora key>.

Its default first request (a ~49 KB system prompt and a dozen tools, max_tokens 32000) is more than
the local 8,192-token model holds: trimmed (its own system prompt, no tools) it is answered, its
max_tokens clamped; untrimmed, it gets the Messages API's own "prompt is too long" 400, which
Claude Code recognizes ("Prompt is too long · the request is ~12304 tokens (limit 8191) …").
What the agent printed goes to the test's output (pytest -s)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

AGENTS_DIR = Path(__file__).resolve().parent
MODULES = AGENTS_DIR / "node_modules" / "@anthropic-ai"
PRICE = 40_000  # micro-USD per 1M tokens, input and output, for the local model
# One agent run: the local model answers at ~60 tokens/s on 2 cores.
RUN_TIMEOUT_S = 240
ANSWER_TOKENS = 256


def claude_binary() -> Path:
    """The native binary npm put in the platform package (it runs from there even when npm's
    install-script policy skipped the wrapper's postinstall), else the wrapper's copy."""
    for candidate in (MODULES / "claude-code-linux-x64" / "claude", MODULES / "claude-code" / "bin" / "claude.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"Claude Code is not installed under {MODULES}: run scripts/bootstrap.sh "
        "(npm ci in tests/agents installs the pinned @anthropic-ai/claude-code)"
    )


def run_claude(
    lexora: RunningStack, api_key: str, home: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    root = lexora.base_url.removesuffix("/v1")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no user settings, no stored login: only what this test passes
        "ANTHROPIC_BASE_URL": f"{root}/api/",
        "ANTHROPIC_AUTH_TOKEN": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "NO_COLOR": "1",
        **(extra_env or {}),
    }
    result = subprocess.run(
        [str(claude_binary()), *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    print(
        f"\n$ claude {' '.join(args)}\n[exit {result.returncode}]\n[stdout]\n{result.stdout}\n[stderr]\n{result.stderr}"
    )
    return result


def test_claude_code_trimmed_to_the_model_answers_and_is_charged(lexora: RunningStack, tmp_path: Path) -> None:
    account = lexora.create_account()
    result = run_claude(
        lexora,
        account.api_key,
        tmp_path / "home",
        "-p",
        "Reply with the word ready.",
        "--model",
        LOCAL_CHAT_MODEL,
        "--system-prompt",
        "You are a helpful assistant. Answer in one short sentence.",
        "--tools",
        "",
        "--max-turns",
        "1",
        "--no-session-persistence",
        "--strict-mcp-config",
        # Unbounded, Claude Code asks for 32000 and a 135M model sampled at temperature 1 may
        # ramble through the ~7,800 tokens the context leaves (minutes on 2 busy cores): bound
        # the answer the way docs/integrations.md tells a user of a small local model to.
        extra_env={"CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(ANSWER_TOKENS)},
    )
    # The model samples at Claude Code's temperature 1 and now and then rambles to the bound. Claude
    # Code then reports the Messages API's stop_reason "max_tokens" as its own error and exits 1:
    # the answer was served, bounded and charged all the same (checked below), so either way passes.
    output = result.stdout + result.stderr
    hit_the_bound = f"exceeded the {ANSWER_TOKENS} output token maximum" in output
    if not hit_the_bound:
        assert result.returncode == 0, output
        assert result.stdout.strip(), "Claude Code printed no answer"
        assert "API Error" not in output
    # Claude Code may make more than one request: wait for the one that answered.
    served, rows = lexora.wait_for_served(account.account_id, "/v1/messages")
    assert served, [(r["endpoint"], r["status_code"], r["error_type"], r["completion_tokens"]) for r in rows]
    if hit_the_bound:
        assert any(row["completion_tokens"] == ANSWER_TOKENS for row in served), served
    for row in served:
        assert row["model"] == LOCAL_CHAT_MODEL
        assert 0 < row["completion_tokens"] <= ANSWER_TOKENS, row
        assert row["cost_pico"] == request_cost_pico(row["prompt_tokens"], row["completion_tokens"], PRICE, PRICE) > 0
    assert lexora.settled_balance(account.account_id).held_micro == 0
    lexora.assert_ledger_consistent(account.account_id)


def test_claude_code_default_request_gets_the_context_length_error(lexora: RunningStack, tmp_path: Path) -> None:
    account = lexora.create_account()
    before = lexora.balance(account.account_id).balance_micro
    result = run_claude(
        lexora,
        account.api_key,
        tmp_path / "home",
        "-p",
        "Say hello",
        "--model",
        LOCAL_CHAT_MODEL,
        "--no-session-persistence",
    )
    printed = result.stdout + result.stderr
    # Claude Code recognizes the Messages API's own error and says it in its words:
    # "Prompt is too long · the request is ~12304 tokens (limit 8191) but this conversation is ...".
    assert result.returncode != 0
    assert "prompt is too long" in printed.lower() and "(limit 8191)" in printed, printed
    assert "API Error: 5" not in printed and "529" not in printed, printed
    rows = lexora.wait_for_usage_rows(account.account_id, 1)
    assert rows and all(r["cost_pico"] == 0 for r in rows), rows
    assert any(r["status_code"] == 400 and r["error_type"] == "invalid_request_error" for r in rows), rows
    assert lexora.settled_balance(account.account_id).balance_micro == before
