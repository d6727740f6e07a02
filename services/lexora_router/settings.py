from __future__ import annotations

from lexora_runtime.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    # Attempts on other endpoints when one cannot be reached before producing any token.
    max_endpoint_attempts: int = 3
    # Hard ceiling on any job, whatever deadline the caller sent.
    max_job_s: float = 600.0
