"""A model's traffic split among its ModelDeployments by their weights (spec.traffic.weight). Pure.

Smooth weighted round robin (nginx's upstream algorithm): deterministic, and spread out rather than
in runs, so over any window of n requests each deployment gets within one request of its share
(a 90/10 split over 200 requests is 180/20). Only the deployments that have an endpoint to offer
take part; one at weight 0 takes traffic only while none with a weight above 0 can.
"""

from __future__ import annotations

from collections.abc import Mapping


class WeightedSplit:
    def __init__(self) -> None:
        self._current: dict[str, dict[str | None, int]] = {}  # model id -> deployment -> credit

    def pick(self, model_id: str, weights: Mapping[str | None, int]) -> str | None:
        """One of `weights`' deployments (keys; None: endpoints of no deployment), by weight."""
        if len(weights) == 1:
            return next(iter(weights))
        positive = {key: weight for key, weight in weights.items() if weight > 0}
        if not positive:  # only weight-0 deployments have endpoints: share among them evenly
            positive = dict.fromkeys(weights, 1)
        current = self._current.setdefault(model_id, {})
        for key in [k for k in current if k not in positive]:
            del current[key]
        total = sum(positive.values())
        for key, weight in positive.items():
            current[key] = current.get(key, 0) + weight
        chosen = max(positive, key=lambda k: current[k])
        current[chosen] -= total
        return chosen
