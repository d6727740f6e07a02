#!/usr/bin/env bash
# Copy the CRDs from manifests/crds/ (their source of truth, kept with the operator) into the
# chart's crds/ directory, byte for byte. tests/charts checks that the two never drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."

shopt -s nullglob
sources=(manifests/crds/*.yaml)
if [ ${#sources[@]} -eq 0 ]; then
  echo "sync-crds: no CRDs under manifests/crds/" >&2
  exit 1
fi
for source in "${sources[@]}"; do
  cp "$source" "charts/lexora/crds/$(basename "$source")"
  echo "sync-crds: $source -> charts/lexora/crds/"
done
