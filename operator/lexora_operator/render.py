"""Spec -> child manifests, as plain dicts. Pure: no API calls, no clock, no randomness.

The same spec always renders the same dicts, which is what makes drift detection a comparison.
Ownership (ownerReferences) is added by the reconciler with kopf.adopt.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from lexora_operator import cache as mc
from lexora_operator import model_repository as repo
from lexora_operator.autoscaling import deployment_replicas, render_hpa, render_scaled_object
from lexora_operator.drift import quantity as parse_quantity
from lexora_operator.spec import DEFAULT_TRITON_REQUESTS, GPU_PRODUCT_LABEL, GROUP, ModelDeploymentSpec

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
TRITON_UID = 1000  # triton-server in NVIDIA's Triton images
INSTANCE_LABEL = f"{GROUP}/model-deployment"
MODEL_ID_ANNOTATION = f"{GROUP}/model-id"
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
# A hash of the model source's credentials (the Secret data the fetcher reads): rotating them rolls
# the pods, so every replica runs with credentials that work now.
CREDENTIALS_HASH_ANNOTATION = f"{GROUP}/credentials-hash"
MANAGED_BY = "lexora-operator"
# How long a pod may spend fetching and loading before the Deployment reports no progress.
FETCH_ALLOWANCE_S = 1800
# The router's job deadline is 120 s: Triton finishes requests in flight for that long on SIGTERM.
DRAIN_S = 120
# emptyDir sizes besides the cache: the assembled /models (links and config.pbtxt files) and /tmp.
MODELS_SIZE, TMP_SIZE = "1Gi", "4Gi"
# The cache emptyDir when nothing big goes into it (a model cache, or a PVC or image source): HF_HOME.
SMALL_CACHE = "1Gi"
# Logs and the containers' writable layers, on top of the emptyDirs.
LOGS_SIZE = "1Gi"


@dataclass(frozen=True)
class ProbeTiming:
    """An exec probe running probe.py (lexora_operator.probe_script): one minimal request per model."""

    period_s: int
    failure_threshold: int
    wait_s: int  # the script's own deadline (--timeout)
    stall_s: int  # no answer in time still passes if the model completed an inference this recently

    @property
    def timeout_s(self) -> int:
        # The kubelet's limit sits above the script's own, so a slow answer is reported by the
        # script (which model, why) and never as a bare "command timed out".
        return self.wait_s + 2


# Readiness: a model whose engine errors (a dead Python-backend stub's error comes within a second)
# fails two probes 5 s apart and leaves the Service within ~10 s. A model that does not answer
# within 3 s stays in while it completed an inference within the router's job deadline (busy:
# its queue moves); a stuck one leaves once nothing completed for that long.
READINESS = ProbeTiming(period_s=5, failure_threshold=2, wait_s=3, stall_s=DRAIN_S)
# Liveness: a restart reloads the model (minutes) and drops every job in flight, so it takes three
# failures 10 s apart (~30 s after an engine starts erroring), a generous 20 s for the answer, and
# for a model that does not answer, 5 minutes without a single completed inference: no busy engine
# goes that long without finishing a job, since the router gives up on one after 120 s.
LIVENESS = ProbeTiming(period_s=10, failure_threshold=3, wait_s=20, stall_s=300)


# The router's pods, by default: the chart's selector labels of its router component.
# prometheus-operator's Service for a Prometheus in the monitoring namespace; the chart sets it.
DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
DEFAULT_ROUTER_LABELS = {"app.kubernetes.io/name": "lexora", "app.kubernetes.io/component": "router"}


@dataclass(frozen=True)
class TritonAccess:
    """Who may reach a model's Triton pods (one NetworkPolicy per ModelDeployment).

    Triton's HTTP and gRPC ports take unauthenticated inference requests: only the router (which
    sits behind the gateway's auth and billing) may call them. The metrics port serves the HPA's
    pending-request metric to Prometheus: `metrics_from` peers, or anyone when empty.
    """

    router_labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROUTER_LABELS))
    router_namespace: str | None = None  # None: router pods in any namespace
    metrics_from: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Children:
    config_map: dict[str, Any]
    deployment: dict[str, Any]
    service: dict[str, Any]
    pdb: dict[str, Any]
    hpa: dict[str, Any] | None
    network_policy: dict[str, Any] | None = None
    scaled_object: dict[str, Any] | None = None  # KEDA's, with spec.autoscaling.provider keda

    def all(self) -> list[dict[str, Any]]:
        children = (
            self.config_map,
            self.deployment,
            self.service,
            self.pdb,
            self.hpa,
            self.scaled_object,
            self.network_policy,
        )
        return [c for c in children if c is not None]


def selector_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "triton", INSTANCE_LABEL: name}


def labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def config_map_name(name: str) -> str:
    return f"{name}-model-repo"


def grpc_address(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local:{GRPC_PORT}"


def http_address(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local:{HTTP_PORT}"


def render_children(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    *,
    credentials_hash: str | None = None,
    access: TritonAccess | None = None,
    cache: mc.CachePlan | None = None,
    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS,
) -> Children:
    """`credentials_hash`: of the Secret data the source names (None: no Secret, or unreadable);
    `access`: the NetworkPolicy's peers (None: no NetworkPolicy); `cache`: the model cache the pods
    mount read-only (None: every pod fetches, and builds its engine, itself); `prometheus_address`:
    where KEDA's ScaledObjects query (provider keda)."""
    files = repo.model_repository_files(spec)
    provider = spec.autoscaling.provider if spec.autoscaling else None
    return Children(
        config_map=render_config_map(name, namespace, files),
        deployment=render_deployment(name, namespace, spec, config_hash(files), credentials_hash, cache),
        service=render_service(name, namespace),
        pdb=render_pdb(name, namespace),
        hpa=render_hpa(name, namespace, spec, labels(name)) if provider == "hpa" else None,
        network_policy=render_network_policy(name, namespace, access) if access is not None else None,
        scaled_object=(
            render_scaled_object(name, namespace, spec, labels(name), prometheus_address)
            if provider == "keda"
            else None
        ),
    )


def config_hash(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _metadata(name: str, namespace: str, spec: ModelDeploymentSpec | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(name)}
    if spec is not None:
        meta["annotations"] = {MODEL_ID_ANNOTATION: spec.model.id}
    return meta


def render_config_map(name: str, namespace: str, files: dict[str, str]) -> dict[str, Any]:
    meta = _metadata(config_map_name(name), namespace)
    meta["labels"] = labels(name)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(sorted(files.items()))}


def render_service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def render_pdb(name: str, namespace: str) -> dict[str, Any]:
    # maxUnavailable (not minAvailable): a single-replica model must not block node drains forever;
    # AlwaysAllow: a pod stuck loading or crash-looping never holds a drain up either.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, namespace),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render_network_policy(name: str, namespace: str, access: TritonAccess) -> dict[str, Any]:
    # An empty namespaceSelector: router pods in any namespace. kubernetes.io/metadata.name is set on
    # every namespace by the API server (1.21+).
    namespaces: dict[str, Any] = {}
    if access.router_namespace:
        namespaces = {"matchLabels": {"kubernetes.io/metadata.name": access.router_namespace}}
    pods = {"matchLabels": dict(sorted(access.router_labels.items()))}
    router = {"namespaceSelector": namespaces, "podSelector": pods}
    metrics: dict[str, Any] = {"ports": [{"port": "metrics", "protocol": "TCP"}]}
    if access.metrics_from:
        metrics["from"] = [dict(peer) for peer in access.metrics_from]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(name, namespace),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [router],
                    "ports": [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}],
                },
                metrics,
            ],
        },
    }


def render_deployment(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    files_hash: str,
    credentials_hash: str | None = None,
    cache: mc.CachePlan | None = None,
) -> dict[str, Any]:
    annotations = {
        CONFIG_HASH_ANNOTATION: files_hash,
        MODEL_ID_ANNOTATION: spec.model.id,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
    }
    if credentials_hash is not None:
        annotations[CREDENTIALS_HASH_ANNOTATION] = credentials_hash
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        # One pod at a time, old pod first: never needs a spare GPU (see docs/operator.md).
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "progressDeadlineSeconds": spec.triton.startup_timeout_seconds + FETCH_ALLOWANCE_S,
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": labels(name), "annotations": annotations},
            "spec": _pod_spec(name, spec, cache),
        },
    }
    replicas = deployment_replicas(spec)
    if replicas is not None:  # None: the HPA owns them
        deployment_spec = {"replicas": replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, spec),
        "spec": deployment_spec,
    }


def _pod_spec(name: str, spec: ModelDeploymentSpec, cache: mc.CachePlan | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # Triton never talks to the API server
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": DRAIN_S + 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
            "runAsGroup": TRITON_UID,
            "fsGroup": TRITON_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": _init_containers(spec, cache),
        "containers": [_triton_container(spec, cache)],
        "volumes": _volumes(name, spec, cache),
        **gpu_scheduling(spec),
    }
    if spec.affinity:
        pod["affinity"] = dict(spec.affinity)
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in spec.image_pull_secrets]
    for key, value in (
        ("runtimeClassName", spec.runtime_class_name),
        ("priorityClassName", spec.priority_class_name),
        ("serviceAccountName", spec.service_account_name),
    ):
        if value:
            pod[key] = value
    return pod


def gpu_scheduling(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """nodeSelector (with the GPU product) and tolerations (with the GPU taint) of the spec's pods."""
    scheduling: dict[str, Any] = {}
    node_selector = dict(spec.node_selector)
    if spec.gpu.count and spec.gpu.product:
        node_selector[GPU_PRODUCT_LABEL] = spec.gpu.product
    if node_selector:
        scheduling["nodeSelector"] = dict(sorted(node_selector.items()))
    tolerations = [dict(t) for t in spec.tolerations]
    if spec.gpu.count and not any(t.get("key") == spec.gpu.resource_name for t in tolerations):
        # GPU node pools are commonly tainted with the GPU resource name.
        tolerations.append({"key": spec.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        scheduling["tolerations"] = tolerations
    return scheduling


def _init_containers(spec: ModelDeploymentSpec, cache: mc.CachePlan | None) -> list[dict[str, Any]]:
    containers = [_fetch_container(spec, cache)]
    if spec.builds_engine and cache is None:
        containers.append(_build_container(spec))
    return containers


def _container_security(read_only: bool) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only,
        "capabilities": {"drop": ["ALL"]},
    }


def add_quantities(*values: str) -> str:
    """Kubernetes quantities added up, written in the largest binary unit that divides the sum."""
    total = sum((parse_quantity(v) or 0 for v in values), start=parse_quantity("0") or 0)
    for suffix, unit in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if total and total % unit == 0:
            return f"{int(total / unit)}{suffix}"
    return str(int(total))


def cache_volume_size(spec: ModelDeploymentSpec, cache: mc.CachePlan | None) -> str:
    """The pod's cache emptyDir: the whole model (and engine) without a model cache; HF_HOME only
    when the model is read from the cache, a PVC or the image."""
    if cache is None and (mc.fetched(spec) or spec.builds_engine):
        return str(spec.cache.size_limit)
    return SMALL_CACHE


def ephemeral_storage(spec: ModelDeploymentSpec, cache: mc.CachePlan | None) -> dict[str, str]:
    """The pod's node disk: every emptyDir it fills, so the scheduler places it where the disk is and
    the kubelet does not evict it later. Request: what the model and logs take; limit: every
    emptyDir's sizeLimit."""
    model = cache_volume_size(spec, cache)
    return {
        "request": add_quantities(model, MODELS_SIZE, LOGS_SIZE),
        "limit": add_quantities(model, MODELS_SIZE, TMP_SIZE, LOGS_SIZE),
    }


def resources_for(
    spec: ModelDeploymentSpec, *, ephemeral: str | None = None, limit: str | None = None
) -> dict[str, Any]:
    """spec.resources with the default CPU/memory requests, the GPUs, and an ephemeral-storage
    request (and limit) unless the spec sets its own."""
    resources = _resources(spec)
    if ephemeral and "ephemeral-storage" not in resources.get("requests", {}):
        resources.setdefault("requests", {})["ephemeral-storage"] = ephemeral
        resources["requests"] = dict(sorted(resources["requests"].items()))
    if limit and "ephemeral-storage" not in resources.get("limits", {}):
        resources.setdefault("limits", {})["ephemeral-storage"] = limit
        resources["limits"] = dict(sorted(resources["limits"].items()))
    return dict(sorted(resources.items()))


def _resources(spec: ModelDeploymentSpec) -> dict[str, Any]:
    resources: dict[str, dict[str, str]] = {
        kind: {resource: str(quantity) for resource, quantity in values.items()}
        for kind, values in spec.resources.items()
        if kind in ("requests", "limits") and values
    }
    limits = resources.get("limits", {})
    for resource, quantity in DEFAULT_TRITON_REQUESTS.items():
        # A limit alone makes Kubernetes request the same amount: a default would only get in its way.
        if resource not in resources.get("requests", {}) and resource not in limits:
            resources.setdefault("requests", {})[resource] = quantity
    if spec.gpu.count:
        resources.setdefault("limits", {})[spec.gpu.resource_name] = str(spec.gpu.count)
    return {kind: dict(sorted(values.items())) for kind, values in sorted(resources.items())}


def _triton_container(spec: ModelDeploymentSpec, cache: mc.CachePlan | None = None) -> dict[str, Any]:
    args = [
        f"--model-repository={repo.MODEL_REPO_DIR}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={DRAIN_S}",
        *spec.triton.extra_args,
    ]
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": f"{repo.CACHE_DIR}/hf"}]
    if spec.backend == "tensorrtllm" and spec.gpu.count > 1:
        # Multi-GPU engines: the backend spawns its own workers instead of needing mpirun.
        env.append({"name": "TRTLLM_ORCHESTRATOR", "value": "1"})
    container: dict[str, Any] = {
        "name": "triton",
        "image": spec.triton.image,
        "imagePullPolicy": spec.triton.image_pull_policy,
        "command": ["tritonserver"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # Triton serves HTTP only once every model has loaded: the startup probe allows for the load.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(spec.triton.startup_timeout_seconds / 10),
        },
        # Triton's health endpoints stay at 200 when an engine cannot serve (a dead Python-backend
        # stub): readiness and liveness ask the model itself (docs/operator.md, "Probes").
        "readinessProbe": _model_probe(spec, READINESS),
        "livenessProbe": _model_probe(spec, LIVENESS),
        "securityContext": _container_security(spec.triton.read_only_root_filesystem),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _mounts(spec, cache, fetcher=False),
    }
    disk = ephemeral_storage(spec, cache)
    container["resources"] = resources_for(spec, ephemeral=disk["request"], limit=disk["limit"])
    return container


def probe_command(spec: ModelDeploymentSpec, timing: ProbeTiming) -> list[str]:
    """What the kubelet runs in the Triton container: probe.py from the ConfigMap, with the image's
    python3 isolated from the image's environment and site-packages (the script needs neither)."""
    return [
        "python3",
        "-I",
        "-S",
        f"{repo.CONFIG_DIR}/{repo.PROBE_SCRIPT_KEY}",
        f"--port={HTTP_PORT}",
        f"--timeout={timing.wait_s}",
        f"--stall-seconds={timing.stall_s}",
        f"{spec.model.kind}:{spec.triton_model_name}",
    ]


def _model_probe(spec: ModelDeploymentSpec, timing: ProbeTiming) -> dict[str, Any]:
    return {
        "exec": {"command": probe_command(spec, timing)},
        "periodSeconds": timing.period_s,
        "timeoutSeconds": timing.timeout_s,
        "failureThreshold": timing.failure_threshold,
    }


source_fingerprint = mc.source_fingerprint


def fetch_env(spec: ModelDeploymentSpec, source: str, *, mode: str) -> list[dict[str, Any]]:
    """What fetch.sh reads: the source, where it goes, the mode (pod | fill | cached)."""
    env: list[dict[str, Any]] = [
        {"name": "LEXORA_FETCH_MODE", "value": mode},
        {"name": "LEXORA_SOURCE_KIND", "value": spec.source.kind},
        {"name": "LEXORA_SOURCE_DIR", "value": source},
        {"name": "LEXORA_SOURCE_FINGERPRINT", "value": mc.source_fingerprint(spec)},
    ]
    if mode != "fill":
        env += [
            {"name": "LEXORA_MODEL_REPO", "value": repo.MODEL_REPO_DIR},
            {"name": "LEXORA_CONFIG_DIR", "value": repo.CONFIG_DIR},
        ]
    env += [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/hf" if mode == "fill" else f"{repo.CACHE_DIR}/hf"},
    ]
    if spec.source.hugging_face is not None:
        hf = spec.source.hugging_face
        env += [
            {"name": "LEXORA_HF_REPO", "value": hf.repo},
            {"name": "LEXORA_HF_REVISION", "value": hf.revision},
        ]
        if hf.token_secret is not None:
            ref = {"name": hf.token_secret.name, "key": hf.token_secret.key}
            env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    if spec.source.object_store is not None:
        store = spec.source.object_store
        env.append({"name": "LEXORA_SOURCE_URI", "value": store.uri})
        if store.endpoint_url:
            env.append({"name": "LEXORA_SOURCE_ENDPOINT", "value": store.endpoint_url})
    return env


def fetch_secret_env(spec: ModelDeploymentSpec, container: dict[str, Any]) -> None:
    store = spec.source.object_store
    if store is not None and store.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": store.credentials_secret}}]


def _fetch_container(spec: ModelDeploymentSpec, cache: mc.CachePlan | None = None) -> dict[str, Any]:
    mode = "cached" if cache is not None and cache.source_key is not None else "pod"
    disk = ephemeral_storage(spec, cache)
    container: dict[str, Any] = {
        "name": "fetch-model",
        "image": spec.source.fetcher_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", f"{repo.CONFIG_DIR}/{repo.FETCH_SCRIPT_KEY}"],
        "env": fetch_env(spec, repo.source_dir(spec), mode=mode),
        "resources": {
            "requests": {"cpu": "500m", "ephemeral-storage": disk["request"], "memory": "512Mi"},
            "limits": {"ephemeral-storage": disk["limit"], "memory": "4Gi"},
        },
        "securityContext": _container_security(True),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _mounts(spec, cache, fetcher=True),
    }
    fetch_secret_env(spec, container)
    return container


def _build_container(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """Without a model cache: build the engine in the pod, on its own GPUs, before Triton starts."""
    env = mc.engine_env(spec, repo.source_dir(spec), mc.ENGINE_DIR, mc.engine_key(spec))
    disk = ephemeral_storage(spec, None)
    return {
        "name": "build-engine",
        "image": mc.builder_image(spec),
        "imagePullPolicy": spec.triton.image_pull_policy,
        "command": ["python3", f"{repo.CONFIG_DIR}/{mc.BUILD_SCRIPT_KEY}"],
        "env": env,
        "resources": resources_for(spec, ephemeral=disk["request"], limit=disk["limit"]),
        "securityContext": _container_security(True),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _mounts(spec, None, fetcher=False),
    }


def _mounts(spec: ModelDeploymentSpec, cache: mc.CachePlan | None, *, fetcher: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": repo.MODEL_REPO_DIR},
        {"name": "cache", "mountPath": repo.CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        # The fetcher runs fetch.sh from it, the kubelet runs probe.py from it in the Triton container.
        {"name": "model-repo-config", "mountPath": repo.CONFIG_DIR, "readOnly": True},
    ]
    if not fetcher:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    if spec.source.pvc is not None:
        pvc_mount = {"name": "source", "mountPath": repo.PVC_SOURCE_DIR, "readOnly": True}
        if spec.source.pvc.sub_path:
            pvc_mount["subPath"] = spec.source.pvc.sub_path
        mounts.append(pvc_mount)
    if cache is not None and cache.source_key is not None:
        # The model cache's copy of the source, read-only where the per-pod fetch would put it.
        mounts.append(
            {
                "name": "model-cache",
                "mountPath": repo.source_dir(spec),
                "subPath": f"sources/{cache.source_key}",
                "readOnly": True,
            }
        )
    if cache is not None and cache.engine_key is not None and not fetcher:
        mounts.append(
            {
                "name": "model-cache",
                "mountPath": mc.ENGINE_DIR,
                "subPath": f"engines/{cache.engine_key}",
                "readOnly": True,
            }
        )
    return mounts


def _volumes(name: str, spec: ModelDeploymentSpec, cache: mc.CachePlan | None = None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {"sizeLimit": MODELS_SIZE}},
        {"name": "cache", "emptyDir": {"sizeLimit": cache_volume_size(spec, cache)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        # The Python backend passes tensors through shared memory; FLUX images need room.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.triton.shm_size)}},
        {"name": "model-repo-config", "configMap": {"name": config_map_name(name), "defaultMode": 0o555}},
    ]
    if spec.source.pvc is not None:
        volumes.append({"name": "source", "persistentVolumeClaim": {"claimName": spec.source.pvc.claim_name}})
    if cache is not None:
        volumes.append(
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.claim_name, "readOnly": True}}
        )
    return volumes


# --- the model cache's children: its PVC, its ConfigMap, the fill and engine build Jobs ------------

JOB_SCRATCH_LIMIT = "8Gi"


def render_cache_config_map(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": mc.config_map_name(name),
            "namespace": namespace,
            "labels": mc.job_labels(name, mc.COMPONENT_FILL),
        },
        "data": mc.cache_files(),
    }


def render_cache_claim(name: str, namespace: str, plan: mc.CachePlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": plan.claim_name, "namespace": namespace, "labels": mc.job_labels(name, mc.COMPONENT_FILL)},
        "spec": {
            # Every replica, on any node, mounts it (read-only); the Jobs write it.
            "accessModes": ["ReadWriteMany"],
            "storageClassName": plan.storage_class,
            "resources": {"requests": {"storage": plan.size}},
        },
    }


def _pod_basics(spec: ModelDeploymentSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in spec.image_pull_secrets]
    for key, value in (
        ("priorityClassName", spec.priority_class_name),
        ("serviceAccountName", spec.service_account_name),
    ):
        if value:
            pod[key] = value
    return pod


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _job(
    name: str,
    namespace: str,
    job_name: str,
    component: str,
    annotations: dict[str, str],
    pod: dict[str, Any],
    *,
    backoff: int,
    deadline: int,
) -> dict[str, Any]:
    labels = mc.job_labels(name, component)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "backoffLimit": backoff,
            "activeDeadlineSeconds": deadline,
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
        },
    }


def _common_volumes(name: str, plan: mc.CachePlan) -> list[dict[str, Any]]:
    return [
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": plan.claim_name}},
        {"name": "tmp", "emptyDir": {"sizeLimit": mc.SCRATCH}},
        {"name": "cache-config", "configMap": {"name": mc.config_map_name(name), "defaultMode": 0o555}},
    ]


def _common_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "model-cache", "mountPath": mc.CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache-config", "mountPath": mc.CACHE_CONFIG_DIR, "readOnly": True},
    ]


def render_fill_job(
    name: str, namespace: str, spec: ModelDeploymentSpec, plan: mc.CachePlan, claim_uid: str, keep: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The fetcher, once, into sources/<key> on the PVC. `keep`: other source keys still in use
    (the live pods' during a rollout); every other directory under sources/ is removed."""
    env = fetch_env(spec, mc.source_dir_in_job(plan), mode="fill")
    env.append({"name": "LEXORA_CACHE_KEEP", "value": " ".join(sorted(set(keep)))})
    container: dict[str, Any] = {
        "name": "fill-cache",
        "image": spec.source.fetcher_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", f"{mc.CACHE_CONFIG_DIR}/{repo.FETCH_SCRIPT_KEY}"],
        "env": env,
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "4Gi", "ephemeral-storage": JOB_SCRATCH_LIMIT},
        },
        "securityContext": _security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _common_mounts(),
    }
    fetch_secret_env(spec, container)
    pod = {**_pod_basics(spec), "containers": [container], "volumes": _common_volumes(name, plan)}
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    annotations = {mc.CACHE_KEY_ANNOTATION: mc.source_fingerprint(spec)}
    return _job(
        name,
        namespace,
        mc.fill_job_name(name, plan, claim_uid),
        mc.COMPONENT_FILL,
        annotations,
        pod,
        backoff=3,
        deadline=mc.FILL_DEADLINE_S,
    )


def render_engine_job(
    name: str, namespace: str, spec: ModelDeploymentSpec, plan: mc.CachePlan, claim_uid: str
) -> dict[str, Any]:
    """TensorRT-LLM's LLM API on gpu.count GPUs of gpu.product, into engines/<key> on the PVC."""
    assert plan.engine_key is not None
    mounts = _common_mounts()
    volumes = _common_volumes(name, plan)
    if plan.source_key is not None:
        source = mc.source_dir_in_job(plan)
    else:  # a PVC source, read where it is
        assert spec.source.pvc is not None
        source = repo.PVC_SOURCE_DIR
        mount = {"name": "source", "mountPath": repo.PVC_SOURCE_DIR, "readOnly": True}
        if spec.source.pvc.sub_path:
            mount["subPath"] = spec.source.pvc.sub_path
        mounts.append(mount)
        volumes.append(
            {"name": "source", "persistentVolumeClaim": {"claimName": spec.source.pvc.claim_name, "readOnly": True}}
        )
    mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.triton.shm_size)}})
    env = mc.engine_env(spec, source, mc.engine_dir_in_job(plan), plan.engine_key)
    # The build's own scratch files (GBs for a large model) go to the PVC, not to the node's disk.
    env.append({"name": "TMPDIR", "value": f"{mc.CACHE_MOUNT}/tmp"})
    container = {
        "name": "build-engine",
        "image": mc.builder_image(spec),
        "imagePullPolicy": spec.triton.image_pull_policy,
        "command": ["python3", f"{mc.CACHE_CONFIG_DIR}/{mc.BUILD_SCRIPT_KEY}"],
        "env": env,
        "resources": resources_for(spec, ephemeral=mc.SCRATCH, limit=JOB_SCRATCH_LIMIT),
        "securityContext": _security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod = {**_pod_basics(spec), **gpu_scheduling(spec), "containers": [container], "volumes": volumes}
    if spec.runtime_class_name:
        pod["runtimeClassName"] = spec.runtime_class_name
    annotations = {mc.ENGINE_KEY_ANNOTATION: plan.engine_label or plan.engine_key}
    return _job(
        name,
        namespace,
        mc.engine_job_name(name, plan, claim_uid),
        mc.COMPONENT_BUILD,
        annotations,
        pod,
        backoff=1,
        deadline=spec.engine.build_timeout_seconds,
    )
