"""The autoscaler of a ModelDeployment with `spec.autoscaling`: a HorizontalPodAutoscaler (provider
hpa) or a KEDA ScaledObject (provider keda). Pure: spec in, manifest out.

Both scale on the work waiting for the model:
- the router's `lexora_pending_requests{model_deployment, model_namespace}`, the requests it holds
  for this ModelDeployment's model (running on its engines; the router keeps no queue of its own);
- for tensorrtllm, TensorRT-LLM's own queue, `nv_trt_llm_request_metrics{request_type="waiting"}`
  on each Triton pod: the requests the in-flight batcher has not scheduled yet.

The hpa provider reads them through prometheus-adapter (the chart's rules, docs/operator.md): the
router's as an External metric selected by `model_deployment`, the engine's as the Pods metric
`nv_trt_llm_waiting_requests`. The keda provider queries Prometheus with the same series.
"""

from __future__ import annotations

from typing import Any

from lexora_operator.spec import (
    GROUP,
    KIND,
    ROUTER_PENDING_METRIC,
    TRTLLM_WAITING_METRIC,
    VERSION,
    AutoscalingSpec,
    ModelDeploymentSpec,
)

KEDA_API_VERSION = "keda.sh/v1alpha1"
TRTLLM_QUEUE_SERIES = 'nv_trt_llm_request_metrics{request_type="waiting"}'


def engine_metric(spec: ModelDeploymentSpec) -> str | None:
    """The Pods metric of the engine's own queue, if the model has one."""
    scaling = spec.autoscaling
    assert scaling is not None
    if scaling.pending_requests_metric:
        return scaling.pending_requests_metric
    return TRTLLM_WAITING_METRIC if spec.backend == "tensorrtllm" else None


def router_query(name: str, namespace: str) -> str:
    """PromQL: the requests every router replica holds for this ModelDeployment."""
    return f'sum({ROUTER_PENDING_METRIC}{{model_deployment="{name}",model_namespace="{namespace}"}})'


def engine_query(name: str, namespace: str) -> str:
    """PromQL: TensorRT-LLM's waiting requests summed over this ModelDeployment's Triton pods, named
    <deployment>-<replicaset hash>-<suffix> (PromQL regexes are anchored; neither part holds a '-')."""
    return (
        f'sum(nv_trt_llm_request_metrics{{request_type="waiting",namespace="{namespace}",'
        f'pod=~"{name}-[a-z0-9]+-[a-z0-9]+"}})'
    )


def _behavior(scaling: AutoscalingSpec) -> dict[str, Any]:
    return {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds},
    }


def _metadata(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def render_hpa(name: str, namespace: str, spec: ModelDeploymentSpec, labels: dict[str, str]) -> dict[str, Any]:
    scaling = spec.autoscaling
    assert scaling is not None and scaling.provider == "hpa"
    metrics: list[dict[str, Any]] = [
        {
            # Served with no Triton pod as well, so the HPA scales a model up from zero on it.
            "type": "External",
            "external": {
                "metric": {
                    "name": ROUTER_PENDING_METRIC,
                    "selector": {"matchLabels": {"model_deployment": name}},
                },
                "target": {"type": "AverageValue", "averageValue": str(scaling.target_pending_requests)},
            },
        }
    ]
    engine = engine_metric(spec)
    if engine is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": engine},
                    "target": {"type": "AverageValue", "averageValue": str(scaling.target_waiting_requests)},
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(name, namespace, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            # An HPA cannot go below 1 without the HPAScaleToZero feature gate; with minReplicas 0 the
            # operator scales the Deployment to zero itself, and the HPA idles while it is there.
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": _behavior(scaling),
        },
    }


def render_scaled_object(
    name: str, namespace: str, spec: ModelDeploymentSpec, labels: dict[str, str], prometheus_address: str
) -> dict[str, Any]:
    """KEDA scales the ModelDeployment itself (its scale subresource writes spec.replicas, which the
    operator hands to the Deployment), so `kubectl scale` and KEDA act on the same field."""
    scaling = spec.autoscaling
    assert scaling is not None and scaling.provider == "keda"
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "router-pending-requests",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_address,
                "query": router_query(name, namespace),
                "threshold": str(scaling.target_pending_requests),
                # Any request held for the model wakes it from zero.
                "activationThreshold": "0",
            },
        }
    ]
    if engine_metric(spec) is not None:
        triggers.append(
            {
                "type": "prometheus",
                "name": "engine-waiting-requests",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": prometheus_address,
                    "query": engine_query(name, namespace),
                    "threshold": str(scaling.target_waiting_requests),
                },
            }
        )
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": _metadata(name, namespace, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(scaling)}},
            "triggers": triggers,
        },
    }


def deployment_replicas(spec: ModelDeploymentSpec) -> int | None:
    """The Deployment's replicas as the operator sets them; None: the HPA owns them."""
    scaling = spec.autoscaling
    if scaling is None:
        return spec.replicas
    if scaling.provider == "hpa":
        return None
    # keda writes spec.replicas through the scale subresource; kept within the spec's bounds.
    return min(max(spec.replicas, scaling.min_replicas), scaling.max_replicas)
