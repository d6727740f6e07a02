from __future__ import annotations

from pydantic import Field

from lexora_router.routing import PolicyName
from lexora_runtime.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    # Attempts on other endpoints when one cannot be reached before producing any token.
    max_endpoint_attempts: int = 3
    # Hard ceiling on any job, whatever deadline the caller sent.
    max_job_s: float = 600.0
    # Engine health (lexora_router.prober): how often an endpoint not seen serving is probed with a
    # real minimal request, and how long a probe may wait for its answer. A dead engine answers a
    # probe at once, so one that stops serving is seen within about one interval; the timeout only
    # catches a hung engine (see docs/architecture.md).
    probe_interval_s: float = 3.0
    probe_timeout_s: float = 10.0
    # LEXORA_ROUTER_POLICY: how a replica is picked (lexora_router.routing): least_outstanding, or
    # round_robin (the baseline the routing benchmark compares).
    policy: PolicyName = Field(default=PolicyName.LEAST_OUTSTANDING, validation_alias="LEXORA_ROUTER_POLICY")
    # LEXORA_ROUTER_HOLD_LIMIT: requests held per model while it wakes from zero replicas
    # (lexora_router.model_holds); beyond it, 503 with Retry-After hold_retry_after_s.
    hold_limit: int = Field(default=32, ge=0, validation_alias="LEXORA_ROUTER_HOLD_LIMIT")
    hold_retry_after_s: int = Field(default=10, gt=0)
    # How often each replica's own load is read from its Triton metrics (lexora_router.load_scraper).
    engine_load_interval_s: float = Field(default=1.0, gt=0)
