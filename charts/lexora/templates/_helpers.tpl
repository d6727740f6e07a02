{{/*
Names and labels. Component-scoped helpers take (dict "root" $ "component" "<name>").
*/}}

{{- define "lexora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name when it already contains the chart name. */}}
{{- define "lexora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lexora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lexora.namespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{- define "lexora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lexora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lexora.labels" -}}
helm.sh/chart: {{ include "lexora.chart" . }}
{{ include "lexora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lexora
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lexora.component.fullname" -}}
{{- /* 40 + "-" + the longest component (postgresql) stays under the 52 characters a StatefulSet may have. */}}
{{- printf "%s-%s" (include "lexora.fullname" .root | trunc 40 | trimSuffix "-") .component }}
{{- end }}

{{- define "lexora.component.selectorLabels" -}}
{{ include "lexora.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "lexora.component.labels" -}}
{{ include "lexora.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "lexora.component.serviceAccountName" -}}
{{- $values := index .root.Values .component }}
{{- if $values.serviceAccount.create }}
{{- default (include "lexora.component.fullname" .) $values.serviceAccount.name }}
{{- else }}
{{- default "default" $values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The five NATS services, in the order they are rendered. */}}
{{- define "lexora.services" -}}
gateway auth billing usage router
{{- end }}

{{/*
Images. `image` takes a dict with repository/tag/digest and the root context.
*/}}
{{- define "lexora.imageRef" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "lexora.image" -}}
{{- include "lexora.imageRef" (dict "image" .Values.image "root" .) }}
{{- end }}

{{- define "lexora.operator.image" -}}
{{- include "lexora.imageRef" (dict "image" .Values.operator.image "root" .) }}
{{- end }}

{{- define "lexora.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Secrets: the name every secretKeyRef points at, and the key names inside it.
*/}}
{{- define "lexora.secretName" -}}
{{- default (include "lexora.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The migration hook reads the database URL from its own hook Secret (see secret-migrations.yaml). */}}
{{- define "lexora.migrations.secretName" -}}
{{- if or .Values.secrets.existingSecret .Values.postgresql.enabled }}
{{- include "lexora.secretName" . }}
{{- else }}
{{- printf "%s-migrations" (include "lexora.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
Connection to NATS: the bundled server, or the URL of yours.
*/}}
{{- define "lexora.nats.fullname" -}}
{{- include "lexora.component.fullname" (dict "root" . "component" "nats") }}
{{- end }}

{{/*
NATS users: one per principal of charts/lexora/files/nats-authorization.conf, which
lexora_contracts.nats_permissions generates (the permissions table, written once). The principals
are read from that file, so the chart follows the table.
*/}}
{{- define "lexora.natsPrincipals" -}}
{{- $users := list }}
{{- range regexFindAll "user: \"[a-z-]+\"" (.Files.Get "files/nats-authorization.conf") -1 }}
{{- $users = append $users (trimSuffix "\"" (trimPrefix "user: \"" .)) }}
{{- end }}
{{- join " " $users }}
{{- end }}

{{/* Env var nats-server reads a principal's password from (nats_permissions.password_variable). */}}
{{- define "lexora.natsPasswordVariable" -}}
{{- printf "LEXORA_NATS_PASSWORD_%s" (. | upper | replace "-" "_") }}
{{- end }}

{{/* Where the clients find the CA of a NATS server that speaks TLS (nats.tls.enabled). */}}
{{- define "lexora.natsCaSecretName" -}}
{{- default .Values.nats.tls.secretName .Values.nats.tls.caSecretName }}
{{- end }}

{{/* A client's NATS identity: user, password from the Secret, the CA when TLS is on.
Takes (dict "root" $ "principal" name). */}}
{{- define "lexora.natsClientEnv" -}}
{{- if .root.Values.nats.auth.enabled }}
- name: LEXORA_NATS_USER
  value: {{ .principal | quote }}
- name: LEXORA_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "lexora.secretName" .root }}
      key: {{ printf "nats-password-%s" .principal }}
{{- end }}
{{- if .root.Values.nats.tls.enabled }}
- name: LEXORA_NATS_CA_FILE
  value: /etc/lexora/nats-ca/ca.crt
{{- end }}
{{- end }}

{{/* The volume and mount of the NATS CA (only its ca.crt, never the server's key). */}}
{{- define "lexora.natsCaVolumeMounts" -}}
{{- if .Values.nats.tls.enabled }}
- name: nats-ca
  mountPath: /etc/lexora/nats-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "lexora.natsCaVolumes" -}}
{{- if .Values.nats.tls.enabled }}
- name: nats-ca
  secret:
    secretName: {{ required "nats.tls.enabled: set nats.tls.secretName (or nats.tls.caSecretName)" (include "lexora.natsCaSecretName" .) }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{- define "lexora.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s.%s.svc:4222" (include "lexora.nats.fullname" .) (include "lexora.namespace" .) }}
{{- else }}
{{- required "nats.url is required when nats.enabled is false (the URL of a NATS server with JetStream)" .Values.nats.url }}
{{- end }}
{{- end }}

{{/*
Connection to Postgres: env entries that set LEXORA_DATABASE_URL. With the bundled Postgres the URL is
assembled from its generated password (Kubernetes expands $(POSTGRES_PASSWORD)); otherwise it is read
whole from the Secret. `secretName` lets the migration hook point at its own Secret.
*/}}
{{- define "lexora.postgresql.fullname" -}}
{{- include "lexora.component.fullname" (dict "root" . "component" "postgresql") }}
{{- end }}

{{- define "lexora.databaseEnv" -}}
{{- $secretName := default (include "lexora.secretName" .root) .secretName }}
{{- if .root.Values.postgresql.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: postgres-password
- name: LEXORA_DATABASE_URL
  value: {{ printf "postgresql+asyncpg://%s:$(POSTGRES_PASSWORD)@%s.%s.svc:5432/%s" .root.Values.postgresql.username (include "lexora.postgresql.fullname" .root) (include "lexora.namespace" .root) .root.Values.postgresql.database | quote }}
{{- else }}
{{- if not (or .root.Values.secrets.existingSecret .root.Values.secrets.databaseUrl) }}
{{- fail "postgresql.enabled is false: set secrets.databaseUrl or secrets.existingSecret (with a database-url key)" }}
{{- end }}
- name: LEXORA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: database-url
{{- end }}
{{- end }}

{{/*
Environment every Lexora service gets, its NATS user included. Takes (dict "root" $ "component" name "metricsPort" port).
*/}}
{{- define "lexora.commonEnv" -}}
- name: LEXORA_NATS_URL
  value: {{ include "lexora.natsUrl" .root | quote }}
{{- include "lexora.natsClientEnv" (dict "root" .root "principal" .component) }}
- name: LEXORA_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: LEXORA_METRICS_HOST
  value: "0.0.0.0"
- name: LEXORA_METRICS_PORT
  value: {{ .metricsPort | quote }}
{{- end }}

{{/* Per-service environment on top of lexora.commonEnv. */}}
{{- define "lexora.gateway.env" -}}
{{/* No database: the gateway covers credit from leases billing grants it over NATS. */}}
- name: LEXORA_HOST
  value: "0.0.0.0"
- name: LEXORA_PORT
  value: {{ .Values.gateway.port | quote }}
- name: LEXORA_WORKERS
  value: {{ .Values.gateway.workers | quote }}
- name: LEXORA_JOB_TIMEOUT_S
  value: {{ .Values.gateway.jobTimeoutSeconds | quote }}
{{- /* The web console (docs/console.md): outside development the gateway refuses to start without
       its own signing secret. */}}
- name: LEXORA_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: LEXORA_CONSOLE_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "lexora.secretName" . }}
      key: console-secret
{{- with .Values.console.oidc }}
{{- if .issuer }}
- name: LEXORA_OIDC_ISSUER
  value: {{ .issuer | quote }}
- name: LEXORA_OIDC_CLIENT_ID
  value: {{ required "console.oidc.clientId is required with console.oidc.issuer" .clientId | quote }}
- name: LEXORA_OIDC_NAME
  value: {{ .name | quote }}
{{- with .redirectUrl }}
- name: LEXORA_OIDC_REDIRECT_URL
  value: {{ . | quote }}
{{- end }}
- name: LEXORA_OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "lexora.secretName" $ }}
      key: oidc-client-secret
{{- end }}
{{- end }}
{{- with .Values.gateway.modelAliases }}
{{- /* A JSON object written pair by pair: the first matching pattern wins, and toJson of a map
       would sort the patterns. */}}
{{- $pairs := list }}
{{- range . }}
{{- $pairs = append $pairs (printf "%s: %s" (toJson .pattern) (toJson .model)) }}
{{- end }}
- name: LEXORA_MODEL_ALIASES
  value: {{ printf "{%s}" (join ", " $pairs) | quote }}
{{- end }}
{{- end }}

{{- define "lexora.auth.env" -}}
{{ include "lexora.databaseEnv" (dict "root" .) }}
- name: LEXORA_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: LEXORA_KEY_PREFIX
  value: {{ .Values.auth.keyPrefix | quote }}
- name: LEXORA_SIGNUP_MODE
  value: {{ .Values.console.signupMode | quote }}
- name: LEXORA_KEY_PEPPER
  valueFrom:
    secretKeyRef:
      name: {{ include "lexora.secretName" . }}
      key: key-pepper
{{- end }}

{{/* Stripe keys are reserved for billing's top-ups; optional so a Secret without them still starts. */}}
{{- define "lexora.billing.env" -}}
{{ include "lexora.databaseEnv" (dict "root" .) }}
- name: LEXORA_STRIPE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "lexora.secretName" . }}
      key: stripe-secret-key
      optional: true
- name: LEXORA_STRIPE_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "lexora.secretName" . }}
      key: stripe-webhook-secret
      optional: true
{{- end }}

{{- define "lexora.usage.env" -}}
{{ include "lexora.databaseEnv" (dict "root" .) }}
{{- end }}

{{- define "lexora.router.env" -}}
- name: LEXORA_ROUTER_POLICY
  value: {{ .Values.router.policy | quote }}
- name: LEXORA_ROUTER_HOLD_LIMIT
  value: {{ .Values.router.holdLimit | quote }}
{{- end }}

{{/*
Probes. The gateway has /livez and /readyz; the operator kopf's /healthz; the other services expose
only their metrics port, which opens once they are connected to NATS. The startup probe covers the
NATS connect patience.
*/}}
{{- define "lexora.probes" -}}
{{- $probe := dict "port" "metrics" "live" "/metrics" "ready" "/metrics" }}
{{- if eq .component "gateway" }}
{{- $probe = dict "port" "http" "live" "/livez" "ready" "/readyz" }}
{{- else if eq .component "operator" }}
{{- $probe = dict "port" "health" "live" "/healthz" "ready" "/healthz" }}
{{- end }}
startupProbe:
  httpGet:
    path: {{ $probe.live }}
    port: {{ $probe.port }}
  periodSeconds: 2
  failureThreshold: 45
livenessProbe:
  httpGet:
    path: {{ $probe.live }}
    port: {{ $probe.port }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: {{ $probe.ready }}
    port: {{ $probe.port }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/*
Wait for the bundled Postgres before running something that needs it (an initContainer).
*/}}
{{- define "lexora.waitForPostgres" -}}
- name: wait-for-postgres
  image: {{ include "lexora.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import socket, sys, time
      address = ("{{ include "lexora.postgresql.fullname" . }}.{{ include "lexora.namespace" . }}.svc", 5432)
      deadline = time.monotonic() + 600
      while True:
          try:
              socket.create_connection(address, timeout=3).close()
              sys.exit(0)
          except OSError as exc:
              if time.monotonic() > deadline:
                  sys.exit(f"postgres not reachable at {address}: {exc}")
              time.sleep(2)
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
{{- end }}

{{/*
A Secret value, base64: the one given in values, else the live one (lookup), else a new random one
(letters only with "lettersOnly": nats-server parses the variable a NATS password is read from).
*/}}
{{- define "lexora.secretValue" -}}
{{- if .value }}
{{- .value | b64enc }}
{{- else if hasKey .live .key }}
{{- index .live .key }}
{{- else if .lettersOnly }}
{{- randAlpha 48 | b64enc }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}
