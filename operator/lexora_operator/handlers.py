"""kopf handlers: thin adapters from kopf's triggers to the Reconciler.

Status is written by the Reconciler itself (not returned from handlers) because a change to the
Triton Deployment or the resync timer updates it too, outside any ModelDeployment handler.
"""

from __future__ import annotations

import contextlib
from typing import Any

import kopf

from lexora_operator.cache import JOB_LABEL, JOB_NAME
from lexora_operator.reconcile import OwnerLookup
from lexora_operator.render import INSTANCE_LABEL, MANAGED_BY
from lexora_operator.spec import GROUP, PLURAL, VERSION, InvalidSpec

MODEL_DEPLOYMENTS = (GROUP, VERSION, PLURAL)
DELETE_RETRIES = 60  # with delay=5: give up on the registry after about five minutes


def owner_lookup(claims: kopf.Index[str, tuple[str, str]]) -> OwnerLookup:
    """The oldest ModelDeployment claiming a model id owns it (ties broken by namespace/name)."""

    def owner_of(model_id: str) -> str | None:
        entries = sorted(claims.get(model_id, []))
        return entries[0][1] if entries else None

    return owner_of


def build_registry(resync_seconds: float) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.index(*MODEL_DEPLOYMENTS, id="model_claims", registry=registry)
    def model_claims(name: str, namespace: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> dict[str, Any] | None:
        model_id = (spec.get("model") or {}).get("id")
        if not model_id or meta.get("deletionTimestamp"):
            return None
        return {model_id: (meta.get("creationTimestamp") or "", f"{namespace}/{name}")}

    # Handlers are nested (one registry per operator run), so their ids are given explicitly:
    # kopf names an index's kwarg and a handler's progress annotation after the id.
    @kopf.on.resume(*MODEL_DEPLOYMENTS, id="reconcile", registry=registry)
    @kopf.on.create(*MODEL_DEPLOYMENTS, id="reconcile", registry=registry)
    @kopf.on.update(*MODEL_DEPLOYMENTS, id="reconcile", field="spec", registry=registry)
    async def reconcile_model_deployment(body: kopf.Body, memo: kopf.Memo, model_claims: kopf.Index, **_: Any) -> None:
        try:
            await memo.reconciler.reconcile(body, owner_lookup(model_claims))
        except InvalidSpec as exc:
            raise kopf.PermanentError(str(exc)) from exc

    @kopf.timer(
        *MODEL_DEPLOYMENTS, id="resync", interval=resync_seconds, initial_delay=resync_seconds, registry=registry
    )
    async def resync_model_deployment(body: kopf.Body, memo: kopf.Memo, model_claims: kopf.Index, **_: Any) -> None:
        # An invalid spec was reported when it changed; re-checking it cannot help, so stay quiet.
        with contextlib.suppress(InvalidSpec):
            await memo.reconciler.reconcile(body, owner_lookup(model_claims))

    @kopf.on.event(
        "apps", "v1", "deployments", id="triton", labels={"app.kubernetes.io/managed-by": MANAGED_BY}, registry=registry
    )
    async def triton_deployment_changed(
        namespace: str, labels: kopf.Labels, memo: kopf.Memo, model_claims: kopf.Index, **_: Any
    ) -> None:
        parent = labels.get(INSTANCE_LABEL)
        if parent:
            await memo.reconciler.reconcile_by_name(namespace, parent, owner_lookup(model_claims))

    @kopf.on.event("batch", "v1", "jobs", id="model_cache", labels={JOB_LABEL: JOB_NAME}, registry=registry)
    async def model_cache_job_changed(
        namespace: str, labels: kopf.Labels, memo: kopf.Memo, model_claims: kopf.Index, **_: Any
    ) -> None:
        # A fill or engine build Job finished (or failed): roll the pods out now, not at the next resync.
        parent = labels.get(INSTANCE_LABEL)
        if parent:
            await memo.reconciler.reconcile_by_name(namespace, parent, owner_lookup(model_claims))

    @kopf.on.delete(*MODEL_DEPLOYMENTS, id="withdraw", retries=DELETE_RETRIES, registry=registry)
    async def withdraw_model_deployment(body: kopf.Body, memo: kopf.Memo, model_claims: kopf.Index, **_: Any) -> None:
        try:
            await memo.reconciler.delete(body, owner_lookup(model_claims))
        except Exception as exc:
            raise kopf.TemporaryError(f"cannot withdraw the model from the registry yet: {exc!r}", delay=5) from exc

    return registry
