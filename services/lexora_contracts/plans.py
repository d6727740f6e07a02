"""Plans and their limits (the contract's defaults; every number is configurable)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PlanLimits(BaseModel):
    """None means unlimited."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    requests_per_day: int | None = Field(default=None, ge=1)
    free_model_requests_per_day: int | None = Field(default=None, ge=0)


DEFAULT_PLANS: dict[str, PlanLimits] = {
    "free": PlanLimits(requests_per_minute=10, requests_per_day=1_000, free_model_requests_per_day=5),
    "pro": PlanLimits(requests_per_minute=60, requests_per_day=50_000, free_model_requests_per_day=50),
    "enterprise": PlanLimits(),
}
