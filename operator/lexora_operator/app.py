"""Operator wiring: credentials, the API client, the registry publisher, and kopf's main loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import kopf

from lexora_operator.handlers import build_registry
from lexora_operator.kube import KubeApi
from lexora_operator.reconcile import Reconciler
from lexora_operator.registry import RegistryPublisher
from lexora_operator.settings import OperatorSettings
from lexora_operator.spec import GROUP
from lexora_operator.wake import ZeroScaler

log = logging.getLogger("lexora.operator")
# Until NATS answers, try to subscribe to the routers' demand this often.
DEMAND_RETRY_S = 2.0

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Kubernetes Events only for problems
    # Resources are fixed: no watch on CRDs (and no permission for it) is needed.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    # A ModelDeployment deleted while its resync timer runs is released once the timer has exited:
    # look again every second, not every minute (kopf's default), so deletion is not held up.
    settings.background.cancellation_polling = 1.0
    return settings


def connection_info(settings: OperatorSettings) -> kopf.ConnectionInfo:
    if settings.kube_server:
        return kopf.ConnectionInfo(server=settings.kube_server, insecure=True)
    base = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=base) or kopf.login_with_kubeconfig(settings=base)
    if info is None:
        raise SystemExit("no Kubernetes credentials: not in a pod, no kubeconfig, and LEXORA_KUBE_SERVER unset")
    return info


async def run_operator(
    settings: OperatorSettings,
    connection: kopf.ConnectionInfo,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    api = KubeApi(connection, token_file=SERVICE_ACCOUNT_TOKEN if connection.token else None)
    publisher = RegistryPublisher(settings.nats_url, settings.nats_access)
    registry = build_registry(settings.resync_seconds, settings.idle_check_seconds)

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        return connection

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    # One namespace (kopf run --namespace): ModelDeployments and the Triton Deployments it watches
    # elsewhere are not seen; the chart then grants a Role in that namespace instead of a ClusterRole.
    namespaces = [settings.watch_namespace] if settings.watch_namespace else []
    reconciler = Reconciler(
        api,
        publisher,
        access=settings.triton_access(),
        cache_storage_class=settings.cache_storage_class or None,
        prometheus_address=settings.prometheus_address,
        watch_namespace=settings.watch_namespace or None,
    )
    scaler = ZeroScaler(api, reconciler.model_deployments)
    demand = asyncio.create_task(_hear_demand(publisher, scaler), name="model-demand")
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            memo=kopf.Memo(reconciler=reconciler, scaler=scaler),
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        demand.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await demand
        await publisher.close()
        await api.close()


async def _hear_demand(publisher: RegistryPublisher, scaler: ZeroScaler) -> None:
    """Subscribe to router.v1.model.demanded once NATS answers (it may start after the operator)."""
    while True:
        try:
            await publisher.hear_demand(scaler.on_demand)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - NATS not up yet: the registry writes wait for it too
            log.warning("cannot hear model demand yet", extra={"fields": {"error": repr(exc)}})
            await asyncio.sleep(DEMAND_RETRY_S)
