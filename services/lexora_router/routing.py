"""Routing policies. Pure: they get the endpoints and a load snapshot, and return a choice."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from lexora_contracts.registry import Endpoint


class RoutingPolicy(ABC):
    @abstractmethod
    def choose(self, endpoints: Sequence[Endpoint], in_flight: Mapping[str, int], exclude: set[str]) -> Endpoint | None:
        """Pick an endpoint among `endpoints` not in `exclude`, or None if none is left."""


class LeastInFlight(RoutingPolicy):
    """Fewest requests in flight from this router; ties go round-robin so load spreads evenly."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, endpoints: Sequence[Endpoint], in_flight: Mapping[str, int], exclude: set[str]) -> Endpoint | None:
        candidates = [e for e in endpoints if e.ready and e.grpc_address not in exclude]
        if not candidates:
            return None
        self._turn += 1
        rotated = candidates[self._turn % len(candidates) :] + candidates[: self._turn % len(candidates)]
        return min(rotated, key=lambda e: in_flight.get(e.grpc_address, 0))


class PolicyName(enum.StrEnum):
    LEAST_IN_FLIGHT = "least_in_flight"


def make_policy(name: PolicyName) -> RoutingPolicy:
    return {PolicyName.LEAST_IN_FLIGHT: LeastInFlight}[name]()
