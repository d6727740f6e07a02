"""Reads each replica's own load in the background: every `interval_s`, GET /metrics at the
`metrics_address` of every deployed endpoint in the registry (lexora_router.engine_load parses it).

The router's policy reads `loads` on the hot path, a dict by metrics address. An endpoint whose
metrics cannot be read is dropped from it, so a stale figure never steers a request: the policy then
goes by this router's own count of outstanding requests alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import aiohttp

from lexora_contracts.registry import ModelRecord
from lexora_router.engine_load import EngineLoad, parse_engine_load

log = logging.getLogger("lexora.router")


class LoadScraper:
    def __init__(self, records: Callable[[], Iterable[ModelRecord]], interval_s: float = 1.0):
        self._records = records
        self._interval_s = interval_s
        self.loads: dict[str, EngineLoad] = {}
        self._failing: set[str] = set()  # addresses whose failure was logged (once, until they answer)

    def targets(self) -> dict[str, str]:
        """Metrics address -> the Triton model served there, for every deployed endpoint that has one."""
        return {
            e.metrics_address: record.triton_model
            for record in self._records()
            for e in record.deployed_endpoints
            if e.metrics_address
        }

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(self._interval_s, 0.5))
        async with aiohttp.ClientSession(timeout=timeout, skip_auto_headers=("User-Agent",)) as session:
            while True:
                await self.scrape_once(session)
                await asyncio.sleep(self._interval_s)

    async def scrape_once(self, session: aiohttp.ClientSession) -> None:
        targets = self.targets()
        for gone in [address for address in self.loads if address not in targets]:
            del self.loads[gone]
        await asyncio.gather(*(self._scrape(session, address, model) for address, model in targets.items()))

    async def _scrape(self, session: aiohttp.ClientSession, address: str, triton_model: str) -> None:
        try:
            async with session.get(f"http://{address}/metrics") as response:
                response.raise_for_status()
                text = await response.text()
            self.loads[address] = parse_engine_load(text, triton_model)
            self._failing.discard(address)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.loads.pop(address, None)
            if address not in self._failing:
                self._failing.add(address)
                log.warning("cannot read engine metrics", extra={"fields": {"address": address, "error": str(exc)}})
