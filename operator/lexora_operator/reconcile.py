"""One idempotent pass over a ModelDeployment: children to spec, status from children, registry
from its replicas.

Every trigger (create, spec change, resume, a change to the Triton Deployment or its Service's
EndpointSlices, the resync timer) runs the same pass, serialised per ModelDeployment, so the last
pass always sees the freshest state. The registry record is per model id, merged from every
ModelDeployment with that id (rollout.py), and rebuilt from the cluster under a per-model lock, so
it never goes back to an older answer either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from lexora_contracts.registry import Endpoint
from lexora_operator import cache as mc
from lexora_operator import status as st
from lexora_operator.autoscaling import KEDA_API_VERSION, deployment_replicas
from lexora_operator.drift import needs_apply, with_applied_hash
from lexora_operator.endpoints import SERVICE_NAME_LABEL, SLICE_API_VERSION, slice_endpoints
from lexora_operator.kube import FIELD_MANAGER, KubeApi, KubeError, object_path, path_for
from lexora_operator.registry import Member, RegistryPublisher
from lexora_operator.render import (
    DEFAULT_PROMETHEUS_ADDRESS,
    Children,
    TritonAccess,
    config_map_name,
    render_cache_claim,
    render_cache_config_map,
    render_children,
    render_engine_job,
    render_fill_job,
    selector_labels,
)
from lexora_operator.rollout import MemberView, Rollout, plan_rollout
from lexora_operator.spec import GROUP, KIND, VERSION, InvalidSpec, ModelDeploymentSpec, parse_spec

log = logging.getLogger("lexora.operator")

# On every child: a hash of what the operator applied (drift.py).
APPLIED_HASH_ANNOTATION = f"{GROUP}/applied-hash"
# Phases a human should look at: their Events are Warnings.
WARNING_PHASES = {"Failed", "Degraded"}


@dataclass
class Reconciler:
    api: KubeApi
    publisher: RegistryPublisher
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # The NetworkPolicy's peers; None: no NetworkPolicy (and any earlier one is deleted).
    access: TritonAccess | None = None
    # The model cache's default storage class (ReadWriteMany); None: only specs naming one get a cache.
    cache_storage_class: str | None = None
    # Where KEDA's ScaledObjects query (spec.autoscaling.provider keda).
    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS
    # The one namespace watched (kopf --namespace); None: every namespace.
    watch_namespace: str | None = None
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # One registry write per model id at a time: each rebuilds the record from the cluster.
    _model_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # The phase each ModelDeployment (by uid) was last given: a pass queued behind another holds a
    # body read before that pass wrote its status.
    _phases: dict[str, str] = field(default_factory=dict)
    _secrets_forbidden: bool = False

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    async def reconcile_by_name(self, namespace: str, name: str) -> st.StatusReport | None:
        body = await self.api.get(md_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            return await self.reconcile(body)
        except InvalidSpec:
            return None  # already reported in the status; only a spec change can help

    async def reconcile(self, body: Mapping[str, Any]) -> st.StatusReport:
        """Raises InvalidSpec (after writing the Failed status) for a spec that can never work."""
        meta = body["metadata"]
        async with self._lock(meta["uid"]):
            name, namespace = meta["name"], meta["namespace"]
            old_status = dict(body.get("status") or {})
            try:
                spec = parse_spec(name, dict(body.get("spec") or {}))
            except InvalidSpec as exc:
                report = st.compute_status(st.Observation(name, 0, None, invalid_spec=str(exc)))
                published = await self._leave_model(old_status.get("publishedModelId"))
                await self._write_status(body, None, report, published, old_status.get("publishedModelId"))
                raise

            me = f"{namespace}/{name}"
            credentials = await self._credentials_hash(namespace, spec)
            plan = mc.plan_cache(name, spec, self.cache_storage_class)
            children = render_children(
                name,
                namespace,
                spec,
                credentials_hash=credentials,
                access=self.access,
                cache=plan,
                prometheus_address=self.prometheus_address,
            )
            cache = await self._prepare_cache(body, spec, plan) if plan is not None else None
            # Until the cache holds what the new spec reads, the pods keep the old one (or none).
            deployment = await self._apply_children(body, children, hold=cache is not None and not cache.ready)
            report = st.compute_status(await self._observe(name, namespace, spec, deployment, cache))

            previous_id = old_status.get("publishedModelId")
            if previous_id and previous_id != spec.model.id:
                await self._republish_quietly(previous_id)  # this one left that model id
            mine: list[dict[str, Any]] = []
            view: MemberView | None = None
            try:
                members, rollout = await self.publish_model(spec.model.id, writing_status=me)
                view = rollout.members.get(me)
                mine = [_status_endpoint(e) for m in members if m.key == me for e in m.endpoints]
                published = _published_condition(rollout, me)
                published_id: str | None = spec.model.id
            except Exception as exc:  # noqa: BLE001 - any NATS failure reads the same to a human
                log.warning("registry publish failed", extra={"fields": {"model": spec.model.id, "error": repr(exc)}})
                message = f"Cannot write the model registry ({exc!r}); retrying on the next resync"
                published = st.Condition("Published", "False", "RegistryUnavailable", message)
                published_id = previous_id
            extra = {**_cache_status(spec, plan, cache), "endpoints": mine, "traffic": _traffic_status(spec, view)}
            await self._write_status(body, spec, report, published, published_id, extra)
            return report

    async def publish_model(
        self, model_id: str, *, keep_listed: bool = False, writing_status: str | None = None
    ) -> tuple[list[Member], Rollout]:
        """Rebuild the record of `model_id` from every ModelDeployment that has it and publish it (or
        withdraw it when none is left; `keep_listed`: list it without endpoints instead). The
        ModelDeployments' status.traffic follows (their shares move with any one's replicas), except
        `writing_status`'s ("namespace/name"), whose caller writes its whole status next."""
        async with self._model_locks.setdefault(model_id, asyncio.Lock()):
            bodies = await self.model_deployments(model_id)
            members = [await self._member(body, spec) for body, spec in bodies]
            rollout = plan_rollout(members)
            if rollout.record is not None:
                await self.publisher.publish(rollout.record)
            elif keep_listed:
                await self._unlist(model_id)
            else:
                await self.publisher.withdraw(model_id)
            for body, spec in bodies:
                if _key(body) == writing_status:
                    continue
                view = rollout.members.get(_key(body))
                traffic = _traffic_status(spec, view)
                if (body.get("status") or {}).get("traffic") != traffic:
                    path = md_path(body["metadata"]["namespace"], body["metadata"]["name"]) + "/status"
                    with contextlib.suppress(KubeError):  # gone meanwhile: nothing to tell
                        await self.api.patch(path, {"status": {"traffic": traffic}})
            return members, rollout

    async def model_deployments(self, model_id: str) -> list[tuple[dict[str, Any], ModelDeploymentSpec]]:
        """The ModelDeployments of `model_id` that are not being deleted and whose spec is valid."""
        path = path_for(f"{GROUP}/{VERSION}", KIND, self.watch_namespace)
        found = []
        for body in await self.api.list(path):
            meta = body.get("metadata") or {}
            if meta.get("deletionTimestamp") or ((body.get("spec") or {}).get("model") or {}).get("id") != model_id:
                continue
            try:
                found.append((body, parse_spec(meta["name"], dict(body.get("spec") or {}))))
            except InvalidSpec:
                continue
        return found

    async def _member(self, body: Mapping[str, Any], spec: ModelDeploymentSpec) -> Member:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        slices = await self.api.list(
            path_for(SLICE_API_VERSION, "EndpointSlice", namespace), {SERVICE_NAME_LABEL: name}
        )
        endpoints = slice_endpoints(slices, namespace, f"{namespace}/{name}")
        return Member(name, namespace, spec, str(meta.get("creationTimestamp") or ""), tuple(endpoints))

    async def delete(self, body: Mapping[str, Any]) -> None:
        """Take this ModelDeployment out of its model first (so nothing routes to pods about to go;
        the model is withdrawn with its last ModelDeployment), then remove the children."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        async with self._lock(meta["uid"]):
            ids = {
                (body.get("status") or {}).get("publishedModelId"),
                ((body.get("spec") or {}).get("model") or {}).get("id"),
            }
            for model_id in sorted(i for i in ids if i):
                await self.publish_model(model_id)
            for child in _child_refs(name, namespace):
                await self.api.delete(child)
            for job in await self.api.list(path_for("batch/v1", "Job", namespace), mc.job_selector(name)):
                await self.api.delete(path_for("batch/v1", "Job", namespace, job["metadata"]["name"]))
        self._locks.pop(meta["uid"], None)
        self._phases.pop(meta["uid"], None)

    async def _apply_children(
        self, owner: Mapping[str, Any], children: Children, *, hold: bool = False
    ) -> dict[str, Any] | None:
        """Apply the children; `hold`: leave the model-repo ConfigMap and the Deployment as they are
        (the model cache is not ready for the new spec: the old pods keep serving, or none start)."""
        name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
        live: dict[str, Any] = {}
        held = (children.config_map, children.deployment) if hold else ()
        for child in children.all():
            if any(child is h for h in held):
                continue
            kopf.append_owner_reference(child, owner=owner)  # type: ignore[arg-type]
            live[child["kind"]] = await self._apply(with_applied_hash(child, APPLIED_HASH_ANNOTATION))
        if hold:
            live["Deployment"] = await self.api.get(path_for("apps/v1", "Deployment", namespace, name))
        if children.hpa is None:
            await self.api.delete(path_for("autoscaling/v2", "HorizontalPodAutoscaler", namespace, name))
        if children.scaled_object is None:  # 404 (also without KEDA installed) is no error
            await self.api.delete(path_for(KEDA_API_VERSION, "ScaledObject", namespace, name))
        if children.network_policy is None:
            await self.api.delete(path_for("networking.k8s.io/v1", "NetworkPolicy", namespace, name))
        return dict(live["Deployment"]) if live["Deployment"] is not None else None

    async def _prepare_cache(
        self, owner: Mapping[str, Any], spec: ModelDeploymentSpec, plan: mc.CachePlan
    ) -> mc.CacheState:
        """The model cache for this spec: its ConfigMap and PVC applied, the fill Job (then the engine
        build Job) created unless one already did the work, and what they report."""
        name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
        config = render_cache_config_map(name, namespace)
        kopf.append_owner_reference(config, owner=owner)  # type: ignore[arg-type]
        await self._apply(with_applied_hash(config, APPLIED_HASH_ANNOTATION))
        desired_claim = render_cache_claim(name, namespace, plan)
        kopf.append_owner_reference(desired_claim, owner=owner)  # type: ignore[arg-type]
        try:
            claim = await self._apply(with_applied_hash(desired_claim, APPLIED_HASH_ANNOTATION))
        except KubeError as exc:
            if exc.status not in (409, 422):
                raise
            # A PVC's class and access modes are immutable: a changed storageClassName is refused.
            message = f"The API server refused the cache claim {plan.claim_name}: {exc}"
            return mc.cache_state(plan, None, None, None, claim_error=message)
        claim_uid = str((claim.get("metadata") or {}).get("uid") or "")
        live = await self.api.get(path_for("apps/v1", "Deployment", namespace, name))
        in_use = mc.source_key_of_deployment(live)
        keep = (in_use,) if in_use and in_use != plan.source_key else ()
        jobs: list[str] = []
        fill = build = None
        if plan.source_key is not None:
            job = render_fill_job(name, namespace, spec, plan, claim_uid, keep)
            jobs.append(job["metadata"]["name"])
            fill = await self._run_job(owner, job, progress=True)
        if plan.engine_key is not None and (fill is None or fill.phase == "Succeeded"):
            job = render_engine_job(name, namespace, spec, plan, claim_uid)
            jobs.append(job["metadata"]["name"])
            build = await self._run_job(owner, job)
        state = mc.cache_state(plan, claim, fill, build)
        if state.ready:
            await self._delete_stale_jobs(name, namespace, keep=jobs)
        return state

    async def _run_job(self, owner: Mapping[str, Any], job: dict[str, Any], *, progress: bool = False) -> mc.JobState:
        """Create the Job once (its pod template is immutable, and a finished Job is the record that
        its directory is complete) and read its state, with progress from its pod's log."""
        namespace, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
        live = await self.api.get(object_path(job))
        if live is None:
            kopf.append_owner_reference(job, owner=owner)  # type: ignore[arg-type]
            log.info("creating cache job", extra={"fields": {"name": job_name}})
            live = await self.api.create(path_for("batch/v1", "Job", namespace), job)
        pods = await self.api.list(path_for("v1", "Pod", namespace), {"job-name": job_name})
        state = mc.job_state(live, pods)
        if progress and state.phase == "Running" and state.pod:
            state = mc.job_state(live, pods, await self.api.log_tail(namespace, state.pod))
        return state

    async def _delete_stale_jobs(self, name: str, namespace: str, keep: list[str]) -> None:
        """Jobs of superseded keys (the spec moved on, or the PVC was recreated)."""
        for job in await self.api.list(path_for("batch/v1", "Job", namespace), mc.job_selector(name)):
            if job["metadata"]["name"] not in keep:
                await self.api.delete(path_for("batch/v1", "Job", namespace, job["metadata"]["name"]))

    async def _apply(self, desired: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply when the live object is missing or differs from `desired`: what the
        operator stopped setting is removed, what someone else changed is put back."""
        current = await self.api.get(object_path(desired))
        if not needs_apply(desired, current):
            assert current is not None
            return current
        fields = {"kind": desired["kind"], "name": desired["metadata"]["name"], "manager": FIELD_MANAGER}
        log.info("creating child" if current is None else "applying child", extra={"fields": fields})
        return await self.api.apply(desired)

    async def _credentials_hash(self, namespace: str, spec: ModelDeploymentSpec) -> str | None:
        """A hash of the Secret data the fetcher reads (None: the source names no Secret). A missing
        Secret hashes too, so creating it rolls pods stuck on CreateContainerConfigError at once."""
        refs = spec.source.secret_refs()
        if not refs or self._secrets_forbidden:
            return None
        seen: list[Any] = []
        for secret_name, key in refs:
            try:
                secret = await self.api.get(path_for("v1", "Secret", namespace, secret_name))
            except KubeError as exc:
                if exc.status != 403:
                    raise
                # Without `get secrets` rotation is not noticed; everything else works.
                log.warning("cannot read model source Secrets", extra={"fields": {"error": str(exc)}})
                self._secrets_forbidden = True
                return None
            data = (secret or {}).get("data") or {}
            value = None if secret is None else (data.get(key) if key else dict(sorted(data.items())))
            seen.append([secret_name, key, value])
        return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()[:16]

    async def _observe(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        deployment: dict[str, Any] | None,
        cache: mc.CacheState | None = None,
    ) -> st.Observation:
        pods = await self.api.list(path_for("v1", "Pod", namespace), selector_labels(name))
        cache_view = None if cache is None else st.CacheView(cache.ready, cache.failed, cache.reason, cache.message)
        fixed = deployment_replicas(spec)  # None: the HPA sets them
        if deployment is None:
            desired = fixed if fixed is not None else spec.autoscaling.min_replicas  # type: ignore[union-attr]
            return st.Observation(
                name,
                desired,
                None,
                pods,
                gpu_count=spec.gpu.count,
                cache=cache_view,
                scales_from_zero=spec.scales_from_zero,
            )
        if fixed is not None:
            desired = fixed
        else:
            assert spec.autoscaling is not None
            desired = int((deployment.get("spec") or {}).get("replicas", spec.autoscaling.min_replicas or 1))
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        matching: int | None = None
        if spec.gpu.count and desired and not ready:
            selector = dict((deployment["spec"]["template"]["spec"]).get("nodeSelector") or {})
            try:
                nodes = await self.api.list(path_for("v1", "Node"))
                matching = st.count_matching_gpu_nodes(nodes, selector, spec.gpu.resource_name, spec.gpu.count)
            except KubeError as exc:  # nodes are a hint; without the permission the pods still tell
                log.debug("cannot list nodes", extra={"fields": {"error": str(exc)}})
        return st.Observation(
            name=name,
            desired_replicas=desired,
            deployment=deployment,
            pods=pods,
            gpu_count=spec.gpu.count,
            matching_gpu_nodes=matching,
            cache=cache_view,
            scales_from_zero=spec.scales_from_zero,
        )

    async def _leave_model(self, model_id: str | None) -> st.Condition:
        """An invalid spec takes its ModelDeployment out of its model; a model left with none stays in
        the catalog without endpoints, so the gateway answers 503 rather than 404."""
        if not model_id:
            return st.Condition("Published", "False", "InvalidSpec", "Nothing is published for an invalid spec")
        try:
            _, rollout = await self.publish_model(model_id, keep_listed=True)
        except Exception as exc:  # noqa: BLE001
            return st.Condition("Published", "False", "RegistryUnavailable", f"Cannot write the registry ({exc!r})")
        if rollout.record is not None:
            message = f"Left out of {model_id}: its other ModelDeployments serve it until the spec is fixed"
            return st.Condition("Published", "False", "InvalidSpec", message)
        message = f"{model_id} stays listed without endpoints (503 model_unavailable) until the spec is fixed"
        return st.Condition("Published", "True", "NoReadyEndpoint", message)

    async def _unlist(self, model_id: str) -> None:
        """Keep a model in the catalog but without endpoints."""
        record = await self.publisher.current(model_id)
        if record is not None:
            await self.publisher.publish(record.model_copy(update={"endpoints": [], "deployments": []}))

    async def _republish_quietly(self, model_id: str) -> None:
        try:
            await self.publish_model(model_id)
        except Exception as exc:  # noqa: BLE001 - the next resync tries again
            log.warning("republish failed", extra={"fields": {"model": model_id, "error": repr(exc)}})

    async def _write_status(
        self,
        body: Mapping[str, Any],
        spec: ModelDeploymentSpec | None,
        report: st.StatusReport,
        published: st.Condition,
        published_id: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`extra`: status.cache, status.engine, status.endpoints (this one's replicas in the
        registry) and status.traffic; absent ones are written empty."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        old = dict(body.get("status") or {})
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        extra = extra or {}
        status = {
            "phase": report.phase,
            "replicas": report.replicas,
            "readyReplicas": report.ready_replicas,
            "selector": ",".join(f"{k}={v}" for k, v in selector_labels(name).items()),
            "observedGeneration": meta.get("generation"),
            "modelId": spec.model.id if spec else None,
            "tritonModel": spec.triton_model_name if spec else None,
            "publishedModelId": published_id,
            "endpoints": extra.get("endpoints") or [],
            "traffic": extra.get("traffic"),
            "cache": extra.get("cache"),
            "engine": extra.get("engine"),
            "conditions": st.merge_conditions(
                old.get("conditions") or [], [report.ready, report.progressing, published], now
            ),
        }
        previous_phase = self._phases.get(meta["uid"], old.get("phase"))
        self._phases[meta["uid"]] = report.phase
        if all(old.get(k) == v for k, v in status.items()):
            return
        await self.api.patch(md_path(namespace, name) + "/status", {"status": status})
        if previous_phase != report.phase:
            await self._post_event(body, previous_phase, report)

    async def _post_event(self, body: Mapping[str, Any], old_phase: str | None, report: st.StatusReport) -> None:
        """A Kubernetes Event on the ModelDeployment for each phase change (`kubectl describe md`)."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": name,
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": "Warning" if report.phase in WARNING_PHASES else "Normal",
            "reason": report.ready.reason,
            "message": f"{old_phase or 'New'} -> {report.phase}: {report.ready.message}"[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": os.environ.get("HOSTNAME") or socket.gethostname(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.api.create(path_for("v1", "Event", namespace), event)
        except Exception as exc:  # noqa: BLE001 - an Event is a courtesy; the status already says it
            log.warning("cannot post an Event", extra={"fields": {"name": name, "error": repr(exc)}})


def _cache_status(spec: ModelDeploymentSpec, plan: mc.CachePlan | None, state: mc.CacheState | None) -> dict[str, Any]:
    """status.cache and status.engine."""
    if plan is not None and state is not None:
        return {"cache": state.cache, "engine": state.engine}
    if not mc.fetched(spec) and not spec.builds_engine:
        return {"cache": None, "engine": None}
    why = "spec.cache.enabled is false" if not spec.cache.enabled else "no ReadWriteMany storage class is configured"
    what = "fetches the model" + (" and builds its engine" if spec.builds_engine else "")
    cache = {"phase": "Disabled", "message": f"No model cache ({why}): every pod {what} itself"}
    engine = None
    if spec.builds_engine:
        engine = {"phase": "InPod", "key": mc.engine_key(spec), "builtFor": mc.engine_label(spec)}
    return {"cache": cache, "engine": engine}


def _key(body: Mapping[str, Any]) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _status_endpoint(endpoint: Endpoint) -> dict[str, Any]:
    entry = {"name": endpoint.name, "grpcAddress": endpoint.grpc_address, "ready": endpoint.ready}
    if endpoint.http_address:
        entry["httpAddress"] = endpoint.http_address
    if endpoint.metrics_address:
        entry["metricsAddress"] = endpoint.metrics_address
    return entry


def _traffic_status(spec: ModelDeploymentSpec, view: MemberView | None) -> dict[str, int]:
    if view is None:
        return {"weight": spec.traffic.weight, "share": 0, "deployments": 0}
    return {"weight": view.weight, "share": view.share, "deployments": view.deployments}


def _published_condition(rollout: Rollout, me: str) -> st.Condition:
    view = rollout.members.get(me)
    if view is not None and view.conflict is not None:
        return st.Condition("Published", "False", "CatalogConflict", view.conflict)
    record = rollout.record
    if record is None:  # this one is being deleted, and was the model's last
        return st.Condition("Published", "False", "Withdrawn", "The model id is withdrawn from the registry")
    mine = [e for e in record.endpoints if e.deployment == me]
    if mine:
        share = f"{view.share}% of {record.id}'s traffic" if view is not None else record.id
        return st.Condition("Published", "True", "Live", f"{len(mine)} replica(s) routed, {share}")
    if record.wakes_on_request and not record.endpoints:
        message = "Listed without endpoints: requests are held while the model wakes from zero"
    elif record.endpoints:
        message = "None of this ModelDeployment's replicas is ready; the model is served by the others"
    else:
        message = "Listed without endpoints: requests get 503 model_unavailable until a replica is ready"
    return st.Condition("Published", "True", "NoReadyEndpoint", message)


def md_path(namespace: str, name: str) -> str:
    return path_for(f"{GROUP}/{VERSION}", KIND, namespace, name)


def _child_refs(name: str, namespace: str) -> list[str]:
    return [
        path_for("networking.k8s.io/v1", "NetworkPolicy", namespace, name),
        path_for("autoscaling/v2", "HorizontalPodAutoscaler", namespace, name),
        path_for(KEDA_API_VERSION, "ScaledObject", namespace, name),
        path_for("policy/v1", "PodDisruptionBudget", namespace, name),
        path_for("v1", "Service", namespace, name),
        path_for("apps/v1", "Deployment", namespace, name),
        path_for("v1", "ConfigMap", namespace, config_map_name(name)),
        path_for("v1", "ConfigMap", namespace, mc.config_map_name(name)),
        path_for("v1", "PersistentVolumeClaim", namespace, mc.claim_name(name)),
    ]


def _epoch(timestamp: str | None) -> int:
    if not timestamp:
        return 0
    try:
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
