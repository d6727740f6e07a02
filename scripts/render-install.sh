#!/usr/bin/env bash
# Render manifests/install/lexora.yaml from charts/lexora for people who do not use helm.
#
#   scripts/render-install.sh [OUTPUT]        (default: manifests/install/lexora.yaml)
#   HELM=/path/to/helm scripts/render-install.sh
#
# The chart's defaults, installed as release "lexora" in namespace "lexora", with three changes: the
# Namespace itself comes first (helm creates it with --create-namespace; kubectl needs the object),
# no Secret is rendered (secrets.existingSecret=lexora-secrets, so no secret lands in git) and no
# helm test pod. tests/charts fails when the committed file is out of date; rerun this after chart
# changes.
set -euo pipefail
cd "$(dirname "$0")/.."

helm="${HELM:-helm}"
output="${1:-manifests/install/lexora.yaml}"
mkdir -p "$(dirname "$output")"

{
  cat <<'HEADER'
# Lexora, rendered from charts/lexora by scripts/render-install.sh: do not edit by hand.
#
# Bundled single-node NATS and Postgres (evaluation); for production use the chart and your own.
#
#   kubectl create namespace lexora        # also in this file; the Secret must exist before the pods
#   kubectl -n lexora create secret generic lexora-secrets \
#     --from-literal=key-pepper="$(openssl rand -hex 32)" \
#     --from-literal=postgres-password="$(openssl rand -hex 24)" \
#     $(for u in gateway auth billing usage router operator admin; do
#         echo --from-literal=nats-password-$u="n$(openssl rand -hex 24)"; done)
#   kubectl apply --server-side -f manifests/install/lexora.yaml
#
# The migration Job runs once; before applying a newer version, `kubectl -n lexora delete job
# lexora-migrations` so that it runs again. Then create the first key, as NATS user admin (the only
# one that may grant credit), its password piped in so it appears on no command line:
#   kubectl -n lexora get secret lexora-secrets -o jsonpath='{.data.nats-password-admin}' | base64 -d |
#     kubectl -n lexora exec -i deploy/lexora-auth -- sh -c \
#       'LEXORA_NATS_USER=admin LEXORA_NATS_PASSWORD="$(cat)" exec lexora admin create-key --credits 5'
---
apiVersion: v1
kind: Namespace
metadata:
  name: lexora
  labels:
    app.kubernetes.io/part-of: lexora
HEADER
  "$helm" template lexora charts/lexora \
    --namespace lexora \
    --include-crds \
    --skip-tests \
    --set secrets.existingSecret=lexora-secrets
} > "$output.partial"
mv "$output.partial" "$output"
echo "render-install: wrote $output"
