"""A cluster in a box: the API emulator admitting ModelDeployments as kube-apiserver does, the real
operator, the controllers, kubelet and kube-proxy of cluster_box.py running the rendered pods here
on the real CPU tritonserver, and the platform (NATS, Postgres, the five services) whose router dials the
Service addresses the operator publishes.

Nothing here skips: a component that is missing (tritonserver, unshare, a model) fails the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
from box_api import api_emulator
from cluster_box import Box, ClusterInABox
from local_images import local_images
from pod_runner import PodEnvironment

from lexora_contracts.nats_permissions import OPERATOR
from lexora_contracts.registry import Endpoint
from lexora_dev.processes import ManagedProcess
from lexora_dev.triton_server import ensure_flux_weights
from lexora_operator.app import run_operator
from lexora_operator.settings import OperatorSettings
from lexora_runtime.bus import NatsAccess
from support.postgres import fresh_database
from support.stack import RunningStack, running_stack

FLUX_CLAIM = "flux-1-schnell-weights"  # manifests/samples/flux-1-schnell-cpu.yaml
# The ReadWriteMany class the box's provisioner binds (cluster_box.py): the operator's default for
# the model cache, as the chart's operator.modelCache.storageClassName sets it. Only downloaded
# sources are cached, so the samples (image and PVC sources) run as before.
CACHE_STORAGE_CLASS = "box-rwx"


@contextlib.contextmanager
def running_operator(api_url: str, nats_url: str, access: NatsAccess) -> Iterator[None]:
    settings = OperatorSettings(
        nats_url=nats_url,
        nats_user=access.user,
        nats_password=access.password,
        resync_seconds=5,
        health_port=0,
        cache_storage_class=CACHE_STORAGE_CLASS,
    )
    connection = kopf.ConnectionInfo(server=api_url, insecure=True)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(run_operator(settings, connection, stop_flag=stop, ready_flag=ready)),
        name="lexora-operator",
        daemon=True,
    )
    thread.start()
    assert ready.wait(30), "the operator did not start"
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def router_with_cluster_dns(platform: RunningStack, hosts: Path) -> None:
    """The stack's router again, with `hosts` as its /etc/hosts (a private mount namespace): it
    resolves `<service>.<namespace>.svc.cluster.local` as a pod in the cluster does."""
    platform.processes.pop("router").stop()
    config = platform.config
    wrapper = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]
    argv = [*wrapper, 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), sys.executable, "-m", "lexora_router"]
    env = {**config.env_for("router"), "GRPC_DNS_RESOLVER": "native"}
    log = config.state_dir / "logs" / "router.log"
    platform.processes["router"] = ManagedProcess("router", argv, log, env=env).start()


@pytest.fixture(scope="module")
def box(state_root: Path, postgres_url: str) -> Iterator[Box]:
    state = state_root / "cluster"
    state.mkdir(parents=True, exist_ok=True)
    hosts = state / "hosts"
    environment = PodEnvironment(
        images=local_images(state / "images"), claims={FLUX_CLAIM: ensure_flux_weights(state / "images")}
    )
    placeholder = Endpoint(name="none", grpc_address="127.0.0.1:9")  # the catalog is empty
    with (
        running_stack(
            "cluster", fresh_database(postgres_url, "cluster"), state / "platform", placeholder, catalog=[]
        ) as platform,
        api_emulator() as (api_url, emulator),
    ):
        cluster = ClusterInABox(api_url, environment, state / "pods", hosts)
        emulator.pod_logs = cluster.pod_logs
        router_with_cluster_dns(platform, hosts)
        cluster.start()
        try:
            with running_operator(api_url, platform.config.nats_url, platform.nats_users.access(OPERATOR)):
                yield Box(api_url, cluster, platform)
        finally:
            cluster.stop()  # the pods' logs and events.log stay in state_root when a test failed
