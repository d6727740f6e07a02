from __future__ import annotations

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
