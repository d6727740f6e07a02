"""Routing policies. Pure: they get a request's route, the candidate endpoints and a load snapshot,
and return a choice (the state they keep is their own: turns, the split, the prefix map).

Both policies first split the model's traffic among its deployments by weight
(lexora_router.deployment_split), then pick a replica within the chosen deployment:

- `least_outstanding` (the default): the replica with the least load, where load is this router's
  requests outstanding there plus the requests the engine itself reports waiting, scaled up by its
  KV-cache use: `(outstanding + waiting + 1) / (1 - 0.9 * kv_cache_use)`, so a replica whose cache
  is full counts as ten times as loaded. Ties go round-robin. A request with a long prompt prefix
  (lexora_router.prefix_affinity) goes to the replica that served its longest known prefix last,
  unless that one is overloaded: more than AFFINITY_SLACK requests above the least queued replica,
  or its KV cache nearly full while another's is not.
- `round_robin`: each replica in turn, whatever its load (the baseline the routing bench compares).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lexora_contracts.registry import DeploymentRef, Endpoint
from lexora_router.deployment_split import WeightedSplit
from lexora_router.engine_load import EngineLoad
from lexora_router.prefix_affinity import AffinityMap

DEFAULT_WEIGHT = 100  # an endpoint whose deployment the record does not list (the dev stack's)
AFFINITY_SLACK = 2
KV_CACHE_HIGH = 0.9
KV_CACHE_WEIGHT = 0.9


@dataclass(frozen=True)
class Route:
    """What a policy knows of a request: its model, the model's deployments, the keys of its prompt's
    prefixes (lexora_router.prefix_affinity.prefix_keys, shortest first)."""

    model_id: str
    deployments: Sequence[DeploymentRef] = ()
    prefixes: Sequence[str] = ()


@dataclass
class Load:
    """This router's requests outstanding per endpoint (by gRPC address) and what each engine
    reports of itself (by metrics address; absent when unknown)."""

    outstanding: Mapping[str, int] = field(default_factory=dict)
    engines: Mapping[str, EngineLoad] = field(default_factory=dict)

    def engine(self, endpoint: Endpoint) -> EngineLoad | None:
        return self.engines.get(endpoint.metrics_address) if endpoint.metrics_address else None

    def queue(self, endpoint: Endpoint) -> float:
        """Requests outstanding here plus those the engine says are waiting."""
        engine = self.engine(endpoint)
        return self.outstanding.get(endpoint.grpc_address, 0) + (engine.waiting if engine else 0.0)

    def kv_cache_use(self, endpoint: Endpoint) -> float:
        engine = self.engine(endpoint)
        return (engine.kv_cache_use or 0.0) if engine else 0.0

    def score(self, endpoint: Endpoint) -> float:
        return (self.queue(endpoint) + 1) / (1 - KV_CACHE_WEIGHT * min(self.kv_cache_use(endpoint), 1.0))


class RoutingPolicy(ABC):
    def __init__(self) -> None:
        self._split = WeightedSplit()
        self._turns: dict[tuple[str, str | None], int] = {}

    def choose(self, route: Route, endpoints: Sequence[Endpoint], load: Load, exclude: set[str]) -> Endpoint | None:
        """Pick an endpoint among `endpoints` not in `exclude` (gRPC addresses), or None if none is left."""
        available = [e for e in endpoints if e.ready and e.grpc_address not in exclude]
        if not available:
            return None
        pools: dict[str | None, list[Endpoint]] = {}
        for endpoint in available:
            pools.setdefault(endpoint.deployment, []).append(endpoint)
        weights = {d.key: d.weight for d in route.deployments}
        deployment = self._split.pick(route.model_id, {k: weights.get(k, DEFAULT_WEIGHT) for k in pools})
        return self._within(route, deployment, pools[deployment], load)

    def _rotated(self, route: Route, deployment: str | None, pool: list[Endpoint]) -> list[Endpoint]:
        """`pool` starting one further along at each call: ties and turns go round-robin."""
        turn = self._turns[(route.model_id, deployment)] = self._turns.get((route.model_id, deployment), -1) + 1
        at = turn % len(pool)
        return pool[at:] + pool[:at]

    @abstractmethod
    def _within(self, route: Route, deployment: str | None, pool: list[Endpoint], load: Load) -> Endpoint:
        """The replica of `deployment` (its available endpoints: `pool`) to take the request."""


class RoundRobin(RoutingPolicy):
    def _within(self, route: Route, deployment: str | None, pool: list[Endpoint], load: Load) -> Endpoint:
        return self._rotated(route, deployment, pool)[0]


class LeastOutstanding(RoutingPolicy):
    def __init__(self, affinity_capacity: int = 50_000) -> None:
        super().__init__()
        self.affinity = AffinityMap(affinity_capacity)

    def _within(self, route: Route, deployment: str | None, pool: list[Endpoint], load: Load) -> Endpoint:
        least = min(self._rotated(route, deployment, pool), key=load.score)
        if not route.prefixes:
            return least
        scope = f"{route.model_id}|{deployment or ''}"
        by_name = {e.name: e for e in pool}
        sticky = None
        for key in reversed(route.prefixes):  # the longest prefix a replica here served last
            sticky = by_name.get(self.affinity.get(scope, key) or "")
            if sticky is not None:
                break
        chosen = sticky if sticky is not None and not _overloaded(sticky, pool, load) else least
        for key in route.prefixes:
            self.affinity.remember(scope, key, chosen.name)
        return chosen


def _overloaded(endpoint: Endpoint, pool: list[Endpoint], load: Load) -> bool:
    """Too busy to keep a prefix: AFFINITY_SLACK requests above the least queued replica, or its KV
    cache nearly full while another replica's is not."""
    if load.queue(endpoint) > min(load.queue(e) for e in pool) + AFFINITY_SLACK:
        return True
    return load.kv_cache_use(endpoint) >= KV_CACHE_HIGH and any(load.kv_cache_use(e) < KV_CACHE_HIGH for e in pool)


class PolicyName(enum.StrEnum):
    LEAST_OUTSTANDING = "least_outstanding"
    ROUND_ROBIN = "round_robin"


def make_policy(name: PolicyName) -> RoutingPolicy:
    return {PolicyName.LEAST_OUTSTANDING: LeastOutstanding, PolicyName.ROUND_ROBIN: RoundRobin}[name]()
