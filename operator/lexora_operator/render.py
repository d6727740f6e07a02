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

from lexora_operator import model_repository as repo
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

    def all(self) -> list[dict[str, Any]]:
        children = (self.config_map, self.deployment, self.service, self.pdb, self.hpa, self.network_policy)
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
) -> Children:
    """`credentials_hash`: of the Secret data the source names (None: no Secret, or unreadable);
    `access`: the NetworkPolicy's peers (None: no NetworkPolicy)."""
    files = repo.model_repository_files(spec)
    return Children(
        config_map=render_config_map(name, namespace, files),
        deployment=render_deployment(name, namespace, spec, config_hash(files), credentials_hash),
        service=render_service(name, namespace),
        pdb=render_pdb(name, namespace),
        hpa=render_hpa(name, namespace, spec) if spec.autoscaling else None,
        network_policy=render_network_policy(name, namespace, access) if access is not None else None,
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


def render_hpa(name: str, namespace: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
    scaling = spec.autoscaling
    assert scaling is not None
    target = {"type": "AverageValue", "averageValue": str(scaling.target_pending_requests)}
    metrics: list[dict[str, Any]] = [
        {
            # Triton's per-model gauge of requests waiting to be scheduled, via a custom metrics adapter.
            "type": "Pods",
            "pods": {
                "metric": {
                    "name": scaling.pending_requests_metric,
                    "selector": {"matchLabels": {"model": spec.triton_model_name}},
                },
                "target": target,
            },
        }
    ]
    if scaling.min_replicas == 0:
        # With no pod there is no Triton metric: scaling up from zero needs demand measured upstream.
        metrics.append(
            {
                "type": "External",
                "external": {
                    "metric": {
                        "name": "lexora_pending_requests",
                        "selector": {"matchLabels": {"model_deployment": name}},
                    },
                    "target": target,
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(name, namespace),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds},
            },
        },
    }


def render_deployment(
    name: str, namespace: str, spec: ModelDeploymentSpec, files_hash: str, credentials_hash: str | None = None
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
            "spec": _pod_spec(name, spec),
        },
    }
    if spec.autoscaling is None:  # with autoscaling the HPA owns replicas
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, spec),
        "spec": deployment_spec,
    }


def _pod_spec(name: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
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
        "initContainers": [_fetch_container(spec)],
        "containers": [_triton_container(spec)],
        "volumes": _volumes(name, spec),
    }
    node_selector = dict(spec.node_selector)
    if spec.gpu.count and spec.gpu.product:
        node_selector[GPU_PRODUCT_LABEL] = spec.gpu.product
    if node_selector:
        pod["nodeSelector"] = dict(sorted(node_selector.items()))
    tolerations = [dict(t) for t in spec.tolerations]
    if spec.gpu.count and not any(t.get("key") == spec.gpu.resource_name for t in tolerations):
        # GPU node pools are commonly tainted with the GPU resource name.
        tolerations.append({"key": spec.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod["tolerations"] = tolerations
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


def _container_security(read_only: bool) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only,
        "capabilities": {"drop": ["ALL"]},
    }


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


def _triton_container(spec: ModelDeploymentSpec) -> dict[str, Any]:
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
        "volumeMounts": _mounts(spec, fetcher=False),
    }
    container["resources"] = _resources(spec)
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


def source_fingerprint(spec: ModelDeploymentSpec) -> str:
    source = spec.source
    if source.hugging_face is not None:
        return f"hf:{source.hugging_face.repo}@{source.hugging_face.revision}"
    if source.object_store is not None:
        return f"uri:{source.object_store.uri}"
    if source.image is not None:
        return f"image:{source.image.path}"
    assert source.pvc is not None
    return f"pvc:{source.pvc.claim_name}/{source.pvc.sub_path}"


def _fetch_container(spec: ModelDeploymentSpec) -> dict[str, Any]:
    source = spec.source
    env: list[dict[str, Any]] = [
        {"name": "LEXORA_SOURCE_KIND", "value": source.kind},
        {"name": "LEXORA_SOURCE_DIR", "value": repo.source_dir(spec)},
        {"name": "LEXORA_SOURCE_FINGERPRINT", "value": source_fingerprint(spec)},
        {"name": "LEXORA_MODEL_REPO", "value": repo.MODEL_REPO_DIR},
        {"name": "LEXORA_CONFIG_DIR", "value": repo.CONFIG_DIR},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{repo.CACHE_DIR}/hf"},
    ]
    container: dict[str, Any] = {
        "name": "fetch-model",
        "image": source.fetcher_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", f"{repo.CONFIG_DIR}/{repo.FETCH_SCRIPT_KEY}"],
        "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}},
        "securityContext": _container_security(True),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _mounts(spec, fetcher=True),
    }
    if source.hugging_face is not None:
        hf = source.hugging_face
        env += [
            {"name": "LEXORA_HF_REPO", "value": hf.repo},
            {"name": "LEXORA_HF_REVISION", "value": hf.revision},
        ]
        if hf.token_secret is not None:
            ref = {"name": hf.token_secret.name, "key": hf.token_secret.key}
            env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    if source.object_store is not None:
        store = source.object_store
        env.append({"name": "LEXORA_SOURCE_URI", "value": store.uri})
        if store.endpoint_url:
            env.append({"name": "LEXORA_SOURCE_ENDPOINT", "value": store.endpoint_url})
        if store.credentials_secret:
            container["envFrom"] = [{"secretRef": {"name": store.credentials_secret}}]
    return container


def _mounts(spec: ModelDeploymentSpec, *, fetcher: bool) -> list[dict[str, Any]]:
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
    return mounts


def _volumes(name: str, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "cache", "emptyDir": {"sizeLimit": str(spec.cache.size_limit)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
        # The Python backend passes tensors through shared memory; FLUX images need room.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.triton.shm_size)}},
        {"name": "model-repo-config", "configMap": {"name": config_map_name(name), "defaultMode": 0o555}},
    ]
    if spec.source.pvc is not None:
        volumes.append({"name": "source", "persistentVolumeClaim": {"claimName": spec.source.pvc.claim_name}})
    return volumes
