"""What the routes share for the life of the process, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from lexora_auth.client import AuthClient
from lexora_billing.client import BillingClient
from lexora_gateway.admission.counters import CounterStore
from lexora_gateway.admission.credit_leases import CreditLeases
from lexora_gateway.admission.key_verifier import KeyVerifier
from lexora_gateway.openai.responses_store import ResponseStore
from lexora_gateway.settings import GatewaySettings
from lexora_router.client import JobInboxes, RouterClient
from lexora_runtime.metrics import ServiceMetrics
from lexora_runtime.model_registry import ModelRegistryView
from lexora_usage.client import UsageClient


@dataclass
class GatewayState:
    settings: GatewaySettings
    nc: NATS
    js: JetStreamContext
    registry: ModelRegistryView
    keys: KeyVerifier
    metrics: ServiceMetrics
    counters: CounterStore
    inboxes: JobInboxes
    auth: AuthClient
    billing: BillingClient
    usage: UsageClient
    router: RouterClient
    responses: ResponseStore  # stored Responses API responses (NATS KV)
    credit: CreditLeases  # this replica's credit leases: every job's worst case is covered from them


async def _state(request: Request) -> GatewayState:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per request.
    return request.app.state.gateway  # type: ignore[no-any-return]


StateDep = Annotated[GatewayState, Depends(_state)]
