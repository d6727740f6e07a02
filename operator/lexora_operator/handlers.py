"""kopf handlers: thin adapters from kopf's triggers to the Reconciler and the ZeroScaler.

Status is written by the Reconciler itself (not returned from handlers) because a change to the
Triton Deployment, its Service's EndpointSlices or the resync timer updates it too, outside any
ModelDeployment handler.
"""

from __future__ import annotations

import contextlib
from typing import Any

import kopf

from lexora_operator.cache import JOB_LABEL, JOB_NAME
from lexora_operator.endpoints import SERVICE_NAME_LABEL
from lexora_operator.render import INSTANCE_LABEL, MANAGED_BY
from lexora_operator.spec import GROUP, PLURAL, VERSION, InvalidSpec

MODEL_DEPLOYMENTS = (GROUP, VERSION, PLURAL)
DELETE_RETRIES = 60  # with delay=5: give up on the registry after about five minutes
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


def build_registry(resync_seconds: float, idle_check_seconds: float = 10.0) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    # Handlers are nested (one registry per operator run), so their ids are given explicitly:
    # kopf names a handler's progress annotation after the id.
    @kopf.on.resume(*MODEL_DEPLOYMENTS, id="reconcile", registry=registry)
    @kopf.on.create(*MODEL_DEPLOYMENTS, id="reconcile", registry=registry)
    @kopf.on.update(*MODEL_DEPLOYMENTS, id="reconcile", field="spec", registry=registry)
    async def reconcile_model_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        try:
            await memo.reconciler.reconcile(body)
        except InvalidSpec as exc:
            raise kopf.PermanentError(str(exc)) from exc

    @kopf.timer(
        *MODEL_DEPLOYMENTS, id="resync", interval=resync_seconds, initial_delay=resync_seconds, registry=registry
    )
    async def resync_model_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # An invalid spec was reported when it changed; re-checking it cannot help, so stay quiet.
        with contextlib.suppress(InvalidSpec):
            await memo.reconciler.reconcile(body)

    @kopf.timer(
        *MODEL_DEPLOYMENTS,
        id="idle",
        interval=idle_check_seconds,
        initial_delay=idle_check_seconds,
        when=lambda spec, **_: ((spec or {}).get("autoscaling") or {}).get("minReplicas") == 0,
        registry=registry,
    )
    async def scale_idle_model_to_zero(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await memo.scaler.idle_check(body)

    @kopf.on.event("apps", "v1", "deployments", id="triton", labels=MANAGED, registry=registry)
    async def triton_deployment_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        parent = labels.get(INSTANCE_LABEL)
        if parent:
            await memo.reconciler.reconcile_by_name(namespace, parent)

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", id="replicas", labels=MANAGED, registry=registry)
    async def triton_endpoints_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        # A pod became ready, stopped being ready, or began terminating: publish the model's
        # replicas now. The slice mirrors the Service's labels; its service-name is the parent.
        parent = labels.get(INSTANCE_LABEL) or labels.get(SERVICE_NAME_LABEL)
        if parent:
            await memo.reconciler.reconcile_by_name(namespace, parent)

    @kopf.on.event("batch", "v1", "jobs", id="model_cache", labels={JOB_LABEL: JOB_NAME}, registry=registry)
    async def model_cache_job_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        # A fill or engine build Job finished (or failed): roll the pods out now, not at the next resync.
        parent = labels.get(INSTANCE_LABEL)
        if parent:
            await memo.reconciler.reconcile_by_name(namespace, parent)

    @kopf.on.delete(*MODEL_DEPLOYMENTS, id="withdraw", retries=DELETE_RETRIES, registry=registry)
    async def withdraw_model_deployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        try:
            await memo.reconciler.delete(body)
        except Exception as exc:
            raise kopf.TemporaryError(f"cannot withdraw the model from the registry yet: {exc!r}", delay=5) from exc

    return registry
