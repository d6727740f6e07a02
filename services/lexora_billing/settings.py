from __future__ import annotations

from lexora_runtime.settings import DatabaseSettings


class BillingSettings(DatabaseSettings):
    # How often held reservations past their expiry (a crashed gateway/router) are released.
    sweep_interval_s: float = 5.0
