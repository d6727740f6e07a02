#!/usr/bin/env bash
# Builds llama-cpp-python for a portable x86-64 baseline and installs it into a virtualenv.
#
#   scripts/build-llama-cpp.sh PYTHON VERSION
#
# Why not a plain `pip install llama-cpp-python`: llama.cpp defaults to GGML_NATIVE=ON, which
# compiles for every instruction the build machine has. A wheel built on a CPU with AVX-512 or AMX
# then dies with SIGILL/SIGSEGV (an `ldtilecfg` general-protection fault) on the first inference on
# any other machine. We build for AVX2/FMA/F16C/BMI2 (x86-64-v3: every x86-64 server of the last
# decade) with AVX-512 and AMX off, and never take a wheel from pip's cache, which keys wheels by
# source only and can hand back an earlier native build. Built wheels are kept in a cache of our
# own, keyed by version and flags, so a rebuild of .venv does not recompile.
#
# tests/unit/test_engine_build.py checks the result (ggml's build info and objdump of libggml-cpu).
set -euo pipefail

PYTHON="$1"
VERSION="$2"

# The flags are the whole recipe: changing them changes the cache key below.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF \
-DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
-DGGML_AMX_BF16=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF"

key="$(printf '%s %s %s' "$VERSION" "$(uname -m)" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-16)"
wheel_dir="${LEXORA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lexora/wheels}/llama-cpp-python-$VERSION-$key"
marker="$(dirname "$(dirname "$PYTHON")")/.lexora-llama-cpp-build"

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$key" ]; then
  exit 0  # this exact portable build is already installed in this virtualenv
fi

if ! ls "$wheel_dir"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "[bootstrap] compiling llama-cpp-python $VERSION for the portable x86-64 baseline (AVX2/FMA/F16C; ~15 min on 2 cores)"
  mkdir -p "$wheel_dir.partial"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" FORCE_CMAKE=1 "$PYTHON" -m pip wheel --quiet --no-deps --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$wheel_dir.partial"
  rm -rf "$wheel_dir"
  mv "$wheel_dir.partial" "$wheel_dir"
fi
# --force-reinstall replaces a native build an earlier bootstrap installed; --no-deps leaves numpy
# and the rest to the project's own install.
"$PYTHON" -m pip install --quiet --no-deps --force-reinstall --no-cache-dir "$wheel_dir"/llama_cpp_python-"$VERSION"-*.whl
echo "$key" > "$marker"
