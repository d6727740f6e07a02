from __future__ import annotations

from pydantic import Field

from lexora_contracts.plans import DEFAULT_PLANS, PlanLimits
from lexora_runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # A job running longer than this is stopped and answered 504 (not charged).
    job_timeout_s: float = 120.0
    # Verified keys are cached this long; revocations are pushed over NATS and drop entries at once.
    auth_cache_ttl_s: float = 60.0
    # How long reservations outlive their job's deadline before billing's sweeper releases them.
    reservation_grace_s: float = 60.0
    # Limits per plan, e.g. LEXORA_PLANS='{"free": {"requests_per_minute": 20, ...}, ...}'.
    plans: dict[str, PlanLimits] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
