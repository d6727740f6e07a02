"""Scale to zero and back: ModelDeployments whose autoscaling allows zero replicas.

A router holding requests for a model with no ready replica announces `ModelDemand` (waiting > 0)
on router.v1.model.demanded at once and every few seconds; a router serving a model announces it
(running > 0) at most every ~10 s. The operator hears both:
- waiting > 0: every ModelDeployment of that model id that scales from zero and is at 0 replicas is
  scaled to 1, as `kubectl scale` would (provider keda: spec.replicas of the ModelDeployment, which
  KEDA also writes; provider hpa: the Deployment's replicas, from which the HPA, idle at zero, takes
  over again with its minReplicas of 1);
- no demand at all for `autoscaling.scaleToZeroAfterSeconds`: a kopf timer scales it to 0.

The idle clock lives in memory: after an operator restart it starts at the start time, so a restart
never scales a model down early.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lexora_contracts.messages import ModelDemand
from lexora_operator.autoscaling import deployment_replicas
from lexora_operator.kube import KubeApi, path_for
from lexora_operator.spec import GROUP, KIND, VERSION, InvalidSpec, ModelDeploymentSpec, parse_spec

log = logging.getLogger("lexora.operator.wake")
# A model id's ModelDeployments with their parsed specs (Reconciler.model_deployments).
ModelDeployments = Callable[[str], Awaitable[list[tuple[dict[str, Any], ModelDeploymentSpec]]]]


@dataclass
class DemandClock:
    """When demand for each model id was last heard. Pure (the caller passes the time)."""

    started: float
    _last: dict[str, float] = field(default_factory=dict)

    def heard(self, demand: ModelDemand, now: float) -> None:
        if demand.waiting > 0 or demand.running > 0:
            self._last[demand.model_id] = max(now, self._last.get(demand.model_id, now))

    def idle_for(self, model_id: str, now: float) -> float:
        """Seconds since the model's last demand (or since the operator started)."""
        return now - self._last.get(model_id, self.started)


def is_idle(spec: ModelDeploymentSpec, clock: DemandClock, now: float) -> bool:
    scaling = spec.autoscaling
    if scaling is None or not scaling.scales_from_zero:
        return False
    return clock.idle_for(spec.model.id, now) >= scaling.scale_to_zero_after_seconds


@dataclass
class ZeroScaler:
    api: KubeApi
    model_deployments: ModelDeployments
    now: Callable[[], float] = time.monotonic
    clock: DemandClock = field(default_factory=lambda: DemandClock(time.monotonic()))

    async def on_demand(self, demand: ModelDemand) -> list[str]:
        """Note the demand; wake the model's ModelDeployments at zero if requests wait. Returns the
        keys ("namespace/name") of those scaled to 1."""
        self.clock.heard(demand, self.now())
        if demand.waiting <= 0:
            return []
        woken = []
        for body, spec in await self.model_deployments(demand.model_id):
            if not spec.scales_from_zero or await self.replicas(body, spec) != 0:
                continue
            await self.scale(body, spec, 1)
            woken.append(_key(body))
            log.info(
                "woke model from zero",
                extra={"fields": {"model": demand.model_id, "deployment": _key(body), "waiting": demand.waiting}},
            )
        return woken

    async def idle_check(self, body: Mapping[str, Any]) -> bool:
        """Scale this ModelDeployment to zero if its model id has been idle long enough."""
        try:
            spec = parse_spec(body["metadata"]["name"], dict(body.get("spec") or {}))
        except InvalidSpec:
            return False
        if not is_idle(spec, self.clock, self.now()):
            return False
        current = await self.replicas(body, spec)
        if not current:
            return False
        await self.scale(body, spec, 0)
        log.info(
            "scaled idle model to zero",
            extra={"fields": {"model": spec.model.id, "deployment": _key(body), "replicas": current}},
        )
        return True

    async def replicas(self, body: Mapping[str, Any], spec: ModelDeploymentSpec) -> int | None:
        """The replicas asked for now (None: no Deployment yet)."""
        fixed = deployment_replicas(spec)
        if fixed is not None:
            return fixed
        meta = body["metadata"]
        live = await self.api.get(path_for("apps/v1", "Deployment", meta["namespace"], meta["name"]))
        if live is None:
            return None
        return int((live.get("spec") or {}).get("replicas", 1))

    async def scale(self, body: Mapping[str, Any], spec: ModelDeploymentSpec, replicas: int) -> None:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        scaling = spec.autoscaling
        if scaling is not None and scaling.provider == "hpa":
            # The HPA owns the Deployment's replicas but does not act at zero: set them directly.
            await self.api.patch(path_for("apps/v1", "Deployment", namespace, name), {"spec": {"replicas": replicas}})
        else:
            # spec.replicas, which the scale subresource (kubectl scale, KEDA) writes too.
            path = path_for(f"{GROUP}/{VERSION}", KIND, namespace, name)
            await self.api.patch(path, {"spec": {"replicas": replicas}})


def _key(body: Mapping[str, Any]) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"
