#!/usr/bin/env bash
# What `make bench` needs beyond the project's .venv: wrk, py-spy, and LiteLLM's proxy in its own
# virtualenv (bench/.venv-litellm; its pins would break ours). Idempotent and quick when done.
# Postgres is not installed here: the benchmarks start it as the tests do (lexora_dev.postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

LITELLM_PIN="1.106.2"
VENV=bench/.venv-litellm

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

if ! command -v wrk >/dev/null; then
  echo "[bench setup] installing wrk (Debian package)"
  apt_install wrk
fi
if [ ! -x .venv/bin/py-spy ]; then
  echo "[bench setup] installing py-spy into .venv (profiles)"
  .venv/bin/python -m pip install --quiet py-spy
fi
if [ ! -x "$VENV/bin/litellm" ] || ! "$VENV/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_PIN')" 2>/dev/null; then
  echo "[bench setup] installing litellm[proxy]==$LITELLM_PIN into $VENV (one time, ~1 minute)"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_PIN"
fi
if [ ! -f bench/portkey/node_modules/@portkey-ai/gateway/build/start-server.js ]; then
  echo "[bench setup] installing Portkey's AI Gateway (bench/portkey/package-lock.json) into bench/portkey"
  # Its postinstall (patch-package) only patches its own build tooling: the server runs without it.
  npm ci --prefix bench/portkey --no-audit --no-fund --ignore-scripts >/dev/null
fi
