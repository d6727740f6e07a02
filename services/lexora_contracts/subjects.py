"""NATS subject names: `<service>.v1.<noun>.<verb>` for request/reply, past tense for events."""

# auth
AUTH_KEY_VERIFY = "auth.v1.key.verify"
AUTH_ACCOUNT_CREATE = "auth.v1.account.create"
AUTH_KEY_CREATE = "auth.v1.key.create"
AUTH_KEY_LIST = "auth.v1.key.list"
AUTH_KEY_REVOKE = "auth.v1.key.revoke"
AUTH_KEY_REVOKED = "auth.v1.key.revoked"  # event: gateways drop cached verifications
AUTH_HEALTH = "auth.v1.health.get"

# billing
BILLING_CREDITS_RESERVE = "billing.v1.credits.reserve"
BILLING_CREDITS_GRANT = "billing.v1.credits.grant"
# A grant an administrator made in the console: billing checks the admin's own credential with auth
# before it credits, so the gateway (which may send this, never a plain grant) cannot mint credit.
BILLING_CREDITS_ADMIN_GRANT = "billing.v1.credits.admingrant"
BILLING_BALANCE_GET = "billing.v1.balance.get"
BILLING_HEALTH = "billing.v1.health.get"
# Credit leases (docs/billing.md): a gateway replica acquires an amount of an account's credit to
# cover its requests from memory, and returns what it no longer needs.
BILLING_LEASE_ACQUIRE = "billing.v1.lease.acquire"
BILLING_LEASE_RETURN = "billing.v1.lease.return"
# event (`LeaseRecall`): an acquisition was refused while other replicas' leases on the account hold
# credit; every gateway returns the free part of its leases on that account
BILLING_LEASE_RECALLED = "billing.v1.lease.recalled"

# router: generation streams chunks to the caller's reply inbox
ROUTER_GENERATION_START = "router.v1.generation.start"
ROUTER_GENERATION_CANCEL = "router.v1.generation.cancel"  # broadcast; the owning router stops
ROUTER_TOKENS_COUNT = "router.v1.tokens.count"  # the model's own tokenizer; not billed
ROUTER_EMBEDDING_CREATE = "router.v1.embedding.create"  # like generation.start: chunks to the reply inbox
ROUTER_IMAGE_CREATE = "router.v1.image.create"  # like generation.start: PNG slices to the reply inbox
ROUTER_HEALTH = "router.v1.health.get"
# event (`ModelDemand`): a router holds requests for a model with no ready replica (at once, to wake
# a deployment that scales from zero), and while it serves a model (at most every few seconds, so
# the operator knows which models are idle); heard by the operator
ROUTER_MODEL_DEMANDED = "router.v1.model.demanded"

# usage: JetStream stream of request outcomes, consumed by billing (settle) and usage (record)
USAGE_STREAM = "USAGE"
USAGE_REQUEST_COMPLETED = "usage.v1.request.completed"
USAGE_STREAM_SUBJECTS = ["usage.v1.request.>"]
USAGE_HEALTH = "usage.v1.health.get"

BILLING_SETTLE_CONSUMER = "billing-settle"
USAGE_RECORD_CONSUMER = "usage-record"

# model registry (NATS KV), written by the operator / local stack, read by router and gateway
MODEL_REGISTRY_BUCKET = "lexora-models"
# endpoint health (NATS KV), written by routers from their probes and failures, read by gateways,
# routers and the local stack's model recovery; entries expire unless rewritten
ENDPOINT_HEALTH_BUCKET = "lexora-endpoint-health"
# stored Responses API responses (NATS KV), written and read by gateways; entries expire after 30 days
RESPONSES_BUCKET = "lexora-responses"
# rate-limit counters (NATS KV), written and read by gateways by compare-and-set
RATE_LIMITS_BUCKET = "lexora-limits"

# headers
REQUEST_ID_HEADER = "Lexora-Request-Id"
MSG_ID_HEADER = "Nats-Msg-Id"

SERVICE_QUEUE = {
    "auth": "auth",
    "billing": "billing",
    "usage": "usage",
    "router": "router",
}
