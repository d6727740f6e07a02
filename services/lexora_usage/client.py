"""usage's typed client: what other packages may import from lexora_usage.

Usage events reach usage through the USAGE JetStream stream (`lexora_runtime.bus`), not through
this client; the client is for the questions others ask of the records.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from lexora_contracts import subjects
from lexora_contracts.messages import HealthProbe, HealthReply
from lexora_contracts.usage_api import (
    USAGE_KEY_SPEND_LIST,
    USAGE_REPORT_GET,
    KeySpendList,
    KeySpendListRequest,
    UsageReport,
    UsageReportRequest,
)
from lexora_runtime.bus import call

# A report over a long range scans many rows; it gets longer than the default request timeout.
REPORT_TIMEOUT_S = 15.0


class UsageClient:
    def __init__(self, nc: NATS):
        self._nc = nc

    async def report(self, request: UsageReportRequest) -> UsageReport:
        return await call(self._nc, USAGE_REPORT_GET, request, UsageReport, timeout=REPORT_TIMEOUT_S)

    async def key_spend(self, account_id: str) -> KeySpendList:
        """What each of the account's keys has cost (pico-USD), from the usage records."""
        return await call(self._nc, USAGE_KEY_SPEND_LIST, KeySpendListRequest(account_id=account_id), KeySpendList)

    async def health(self, timeout: float = 2.0) -> HealthReply:
        return await call(self._nc, subjects.USAGE_HEALTH, HealthProbe(), HealthReply, timeout=timeout)
