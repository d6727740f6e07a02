"""Spec -> child manifests: what lands in the cluster, checked against the Kubernetes 1.37 schemas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
from operator_support import load_sample

from lexora_operator import probe_script
from lexora_operator.render import CONFIG_HASH_ANNOTATION, CREDENTIALS_HASH_ANNOTATION, TritonAccess, render_children
from lexora_operator.spec import InvalidSpec, parse_spec

K8S_VERSION = "1.37"


SAMPLES = ["llama-3.2-3b-instruct.yaml", "flux-1-schnell.yaml", "smollm2-cpu.yaml"]


def children_of(sample: str, *, access: TritonAccess | None = None, credentials: str | None = None, **overrides: Any):
    manifest = load_sample(sample)
    spec = copy.deepcopy(manifest["spec"])
    spec.update(overrides)
    name = manifest["metadata"]["name"]
    return render_children(name, "lexora-models", parse_spec(name, spec), credentials_hash=credentials, access=access)


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_child_of_the_samples_is_valid_kubernetes(sample: str) -> None:
    children = children_of(sample, access=TritonAccess(router_namespace="lexora"), credentials="0123abcd")
    assert children.network_policy is not None
    for child in children.all():
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_llama_runs_triton_on_one_h100_with_probes_and_ports() -> None:
    deployment = children_of("llama-3.2-3b-instruct.yaml").deployment
    pod = deployment["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert [p["containerPort"] for p in triton["ports"]] == [8000, 8001, 8002]
    # startupTimeoutSeconds 900 at a 10 s period: the load may take 15 minutes before a restart.
    startup = triton["startupProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert "--model-repository=/models" in triton["args"]


def test_triton_runs_as_non_root_with_a_read_only_root_filesystem() -> None:
    pod = children_of("flux-1-schnell.yaml").deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/dev/shm", "/models", "/cache"} <= mounts


def test_rollout_replaces_one_pod_at_a_time_without_a_spare_gpu() -> None:
    strategy = children_of("llama-3.2-3b-instruct.yaml").deployment["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def test_autoscaling_hands_replicas_to_an_hpa_on_the_work_waiting() -> None:
    children = children_of("llama-3.2-3b-instruct.yaml")
    assert "replicas" not in children.deployment["spec"]
    assert children.scaled_object is None
    hpa = children.hpa["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-3-2-3b-instruct"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    router, engine = hpa["metrics"]
    # The router's requests for this ModelDeployment (prometheus-adapter's external rule maps the
    # model_deployment label), and TensorRT-LLM's own waiting queue on each pod.
    assert router == {
        "type": "External",
        "external": {
            "metric": {
                "name": "lexora_pending_requests",
                "selector": {"matchLabels": {"model_deployment": "llama-3-2-3b-instruct"}},
            },
            "target": {"type": "AverageValue", "averageValue": "16"},
        },
    }
    assert engine == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "nv_trt_llm_waiting_requests"},
            "target": {"type": "AverageValue", "averageValue": "1"},
        },
    }


def test_a_python_model_scales_on_the_routers_metric_alone_unless_given_an_engine_metric() -> None:
    autoscaling = {"minReplicas": 0, "maxReplicas": 2}
    hpa = children_of("smollm2-cpu.yaml", autoscaling=autoscaling).hpa["spec"]
    # Without the HPAScaleToZero gate an HPA cannot go below 1: the operator takes the Deployment to
    # zero itself (wake.py), and the HPA idles while it is there.
    assert hpa["minReplicas"] == 1
    assert [m["type"] for m in hpa["metrics"]] == ["External"]
    autoscaling["pendingRequestsMetric"] = "vllm_num_requests_waiting"
    hpa = children_of("smollm2-cpu.yaml", autoscaling=autoscaling).hpa["spec"]
    assert hpa["metrics"][1]["pods"]["metric"] == {"name": "vllm_num_requests_waiting"}


def test_the_former_default_engine_metric_stored_in_old_objects_counts_as_unset() -> None:
    autoscaling = {"maxReplicas": 2, "pendingRequestsMetric": "nv_inference_pending_request_count"}
    llama = children_of("llama-3.2-3b-instruct.yaml", autoscaling=autoscaling).hpa["spec"]["metrics"]
    assert [m["pods"]["metric"]["name"] for m in llama if m["type"] == "Pods"] == ["nv_trt_llm_waiting_requests"]
    smollm = children_of("smollm2-cpu.yaml", autoscaling=autoscaling).hpa["spec"]["metrics"]
    assert [m["type"] for m in smollm] == ["External"]


def test_keda_scales_the_model_deployment_itself_on_prometheus_queries() -> None:
    autoscaling = {"provider": "keda", "minReplicas": 0, "maxReplicas": 3, "targetPendingRequests": 4}
    children = children_of("llama-3.2-3b-instruct.yaml", autoscaling=autoscaling, replicas=2)
    assert children.hpa is None
    for child in children.all():  # KEDA's ScaledObject has no schema here; the rest must be valid
        if child["kind"] != "ScaledObject":
            kubernetes_validate.validate(child, K8S_VERSION, strict=True)
    # KEDA writes spec.replicas through the scale subresource; the operator passes it on.
    assert children.deployment["spec"]["replicas"] == 2
    scaled = children.scaled_object
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    assert scaled["metadata"]["name"] == "llama-3-2-3b-instruct"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "serving.lexora.network/v1alpha1",
        "kind": "ModelDeployment",
        "name": "llama-3-2-3b-instruct",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 3)
    router, engine = spec["triggers"]
    assert router["type"] == engine["type"] == "prometheus"
    assert router["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert router["metadata"]["query"] == (
        'sum(lexora_pending_requests{model_deployment="llama-3-2-3b-instruct",model_namespace="lexora-models"})'
    )
    assert (router["metadata"]["threshold"], router["metadata"]["activationThreshold"]) == ("4", "0")
    assert engine["metadata"]["threshold"] == "1"
    for trigger in (router, engine):
        promql_parser.parse(trigger["metadata"]["query"])  # raises on invalid PromQL
    assert 'request_type="waiting"' in engine["metadata"]["query"]
    assert 'pod=~"llama-3-2-3b-instruct-[a-z0-9]+-[a-z0-9]+"' in engine["metadata"]["query"]


def test_keda_keeps_a_manual_replica_count_within_the_bounds() -> None:
    autoscaling = {"provider": "keda", "minReplicas": 1, "maxReplicas": 3}
    assert children_of("smollm2-cpu.yaml", autoscaling=autoscaling, replicas=9).deployment["spec"]["replicas"] == 3
    assert children_of("smollm2-cpu.yaml", autoscaling=autoscaling, replicas=0).deployment["spec"]["replicas"] == 1


def test_fixed_replicas_render_no_hpa() -> None:
    children = children_of("flux-1-schnell.yaml", replicas=3)
    assert children.hpa is None
    assert children.deployment["spec"]["replicas"] == 3


def test_pdb_never_blocks_a_drain_of_a_single_replica() -> None:
    pdb = children_of("flux-1-schnell.yaml").pdb["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb


def test_hugging_face_source_is_fetched_by_an_init_container_with_the_token_secret() -> None:
    init = children_of("flux-1-schnell.yaml").deployment["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e for e in init["env"]}
    assert env["LEXORA_SOURCE_KIND"]["value"] == "huggingFace"
    assert env["LEXORA_HF_REPO"]["value"] == "black-forest-labs/FLUX.1-schnell"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "huggingface-token", "key": "HF_TOKEN"}
    assert {"mountPath": "/cache", "name": "cache"} in init["volumeMounts"]


PREBUILT_PVC = {
    "source": {"pvc": {"claimName": "llama-3-2-3b-trtllm-engines", "subPath": "h100-bf16-tp1"}},
    "engine": {"mode": "prebuilt"},
}


def test_pvc_source_is_mounted_read_only_and_not_copied() -> None:
    pod = children_of("llama-3.2-3b-instruct.yaml", **PREBUILT_PVC).deployment["spec"]["template"]["spec"]
    source = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "source")
    assert source == {"name": "source", "mountPath": "/source", "readOnly": True, "subPath": "h100-bf16-tp1"}
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-model"], "a prebuilt engine is not built"


def test_object_store_source_passes_the_uri_endpoint_and_credentials() -> None:
    source = {
        "objectStore": {
            "uri": "s3://models/flux",
            "endpointURL": "http://minio.minio:9000",
            "credentialsSecret": "minio-creds",
        }
    }
    init = children_of("flux-1-schnell.yaml", source=source).deployment["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["LEXORA_SOURCE_URI"] == "s3://models/flux"
    assert env["LEXORA_SOURCE_ENDPOINT"] == "http://minio.minio:9000"
    assert init["envFrom"] == [{"secretRef": {"name": "minio-creds"}}]


def test_a_triton_parameter_change_rolls_the_pods_through_the_config_hash() -> None:
    before = children_of("llama-3.2-3b-instruct.yaml")
    triton = {**load_sample("llama-3.2-3b-instruct.yaml")["spec"]["triton"], "kvCacheFreeGpuMemFraction": 0.8}
    after = children_of("llama-3.2-3b-instruct.yaml", triton=triton)
    annotation = ["spec", "template", "metadata", "annotations", CONFIG_HASH_ANNOTATION]

    def dig(obj: dict[str, Any]) -> Any:
        for key in annotation:
            obj = obj[key]
        return obj

    assert dig(before.deployment) != dig(after.deployment)
    assert "0.8" in after.config_map["data"]["tensorrt_llm.config.pbtxt"]


def test_rendering_is_deterministic() -> None:
    assert children_of("llama-3.2-3b-instruct.yaml") == children_of("llama-3.2-3b-instruct.yaml")


def test_cpu_model_on_the_python_backend_asks_for_no_gpu() -> None:
    children = children_of("flux-1-schnell.yaml", gpu={"count": 0})
    pod = children.deployment["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert "kind: KIND_CPU" in children.config_map["data"]["flux-1-schnell.config.pbtxt"]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"backend": "tensorrtllm"}, "tensorrtllm serves chat models only"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas (3) is above maxReplicas (2)"),
        ({"source": {}}, "set exactly one of pvc, objectStore, huggingFace, image"),
        ({"serviceAccountName": "Not_A_Name"}, "spec.serviceAccountName"),
        ({"gpu": {"count": -1}}, "spec.gpu.count"),
        ({"model": {"id": "a model with spaces", "kind": "image"}}, "cannot be a registry key"),
        ({"replicaz": 2}, "spec.replicaz"),
    ],
)
def test_specs_that_can_never_work_are_refused_with_the_field_named(change: dict[str, Any], complaint: str) -> None:
    manifest = load_sample("flux-1-schnell.yaml")
    with pytest.raises(InvalidSpec, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        parse_spec("flux-1-schnell", {**manifest["spec"], **change})


def test_a_name_that_cannot_name_a_service_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="DNS-1035"):
        parse_spec("Flux_1", load_sample("flux-1-schnell.yaml")["spec"])


def triton_container(sample: str, **overrides: Any) -> dict[str, Any]:
    return children_of(sample, **overrides).deployment["spec"]["template"]["spec"]["containers"][0]


def option(probe: dict[str, Any], name: str) -> float:
    return float(next(arg.split("=", 1)[1] for arg in probe["exec"]["command"] if arg.startswith(f"{name}=")))


@pytest.mark.parametrize(
    ("sample", "overrides", "target"),
    [
        ("llama-3.2-3b-instruct.yaml", {}, "chat:lexora-trtllm-chat"),
        ("flux-1-schnell.yaml", {}, "image:flux-1-schnell"),
        (
            "flux-1-schnell.yaml",
            {"model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "kind": "chat", "contextLength": 8192}},
            "chat:smollm2-135m-instruct",
        ),
        (
            "flux-1-schnell.yaml",
            {"model": {"id": "sentence-transformers/all-MiniLM-L6-v2", "kind": "embedding", "contextLength": 256}},
            "embedding:all-minilm-l6-v2",
        ),
    ],
)
def test_readiness_and_liveness_send_the_served_model_a_real_request(
    sample: str, overrides: dict[str, Any], target: str
) -> None:
    """Triton's /v2/health/* stay at 200 when a stub dies: the probes ask the model itself."""
    triton = triton_container(sample, **overrides)
    for name in ("readinessProbe", "livenessProbe"):
        probe = triton[name]
        assert set(probe) == {"exec", "periodSeconds", "timeoutSeconds", "failureThreshold"}, name
        command = probe["exec"]["command"]
        assert command[:4] == ["python3", "-I", "-S", "/etc/lexora/model-repo/probe.py"]
        assert "--port=8000" in command
        assert command[-1] == target


def test_a_model_that_cannot_serve_leaves_the_service_within_10s_and_restarts_after_3_failures() -> None:
    triton = triton_container("llama-3.2-3b-instruct.yaml")
    ready, live = triton["readinessProbe"], triton["livenessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] == 10
    assert (live["periodSeconds"], live["failureThreshold"]) == (10, 3)
    for probe in (ready, live):
        # The script gives up first and says why; the kubelet's own timeout would only say "timed out".
        assert option(probe, "--timeout") < probe["timeoutSeconds"]


def test_a_busy_engine_is_not_restarted_by_its_liveness_probe() -> None:
    """Liveness waits longer for the answer than readiness, and for an engine that does not answer,
    wants much longer without a completed inference than the router's 120 s job deadline."""
    triton = triton_container("llama-3.2-3b-instruct.yaml")
    ready, live = triton["readinessProbe"], triton["livenessProbe"]
    assert option(live, "--timeout") > option(ready, "--timeout")
    assert option(ready, "--stall-seconds") >= 120
    assert option(live, "--stall-seconds") >= 2 * 120


def test_the_probe_script_reaches_the_triton_container_from_the_config_map() -> None:
    children = children_of("flux-1-schnell.yaml")
    pod = children.deployment["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    script = triton["readinessProbe"]["exec"]["command"][3]
    mount = next(m for m in triton["volumeMounts"] if script.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == children.config_map["metadata"]["name"]
    key = script.removeprefix(mount["mountPath"] + "/")
    assert children.config_map["data"][key] == Path(probe_script.__file__).read_text(encoding="utf-8")


def test_pod_scheduling_and_identity_pass_through_from_the_spec() -> None:
    affinity = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "triton"}},
                    },
                }
            ]
        }
    }
    tolerations = [{"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}]
    children = children_of(
        "flux-1-schnell.yaml",
        affinity=affinity,
        tolerations=tolerations,
        runtimeClassName="nvidia",
        priorityClassName="inference-high",
        serviceAccountName="model-reader",
    )
    pod = children.deployment["spec"]["template"]["spec"]
    assert pod["affinity"] == affinity
    assert pod["tolerations"][0] == tolerations[0]
    assert (pod["runtimeClassName"], pod["priorityClassName"], pod["serviceAccountName"]) == (
        "nvidia",
        "inference-high",
        "model-reader",
    )
    assert pod["automountServiceAccountToken"] is False, "workload identity needs no API token"
    kubernetes_validate.validate(children.deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({}, {"requests": {"cpu": "1", "memory": "2Gi"}}),
        ({"requests": {"memory": "48Gi"}}, {"requests": {"cpu": "1", "memory": "48Gi"}}),
        # A limit alone is also the request: no default may undercut or exceed it.
        ({"limits": {"cpu": "500m", "memory": "1Gi"}}, {"limits": {"cpu": "500m", "memory": "1Gi"}}),
    ],
)
def test_triton_is_never_best_effort(resources: dict[str, Any], expected: dict[str, Any]) -> None:
    container = triton_container("smollm2-cpu.yaml", resources=resources)
    # The image source puts nothing big on the node's disk: 1Gi cache + 1Gi /models + 1Gi logs.
    disk = {"requests": {"ephemeral-storage": "3Gi"}, "limits": {"ephemeral-storage": "7Gi"}}
    assert container["resources"] == {
        kind: dict(sorted({**expected.get(kind, {}), **disk[kind]}.items())) for kind in ("limits", "requests")
    }


def test_the_source_credentials_hash_is_a_pod_template_annotation() -> None:
    template = children_of("flux-1-schnell.yaml", credentials="feedface").deployment["spec"]["template"]
    assert template["metadata"]["annotations"][CREDENTIALS_HASH_ANNOTATION] == "feedface"
    plain = children_of("flux-1-schnell.yaml").deployment["spec"]["template"]
    assert CREDENTIALS_HASH_ANNOTATION not in plain["metadata"]["annotations"]


def test_a_model_baked_into_the_triton_image_is_linked_not_fetched() -> None:
    children = children_of("smollm2-cpu.yaml")
    data = children.config_map["data"]
    assert data["layout"] == "model smollm2-135m-instruct /opt/lexora/models/smollm2-135m-instruct/1\n"
    config = data["smollm2-135m-instruct.config.pbtxt"]
    assert 'string_value: "/opt/lexora/models/smollm2-135m-instruct"' in config  # model_dir
    assert "kind: KIND_CPU" in config
    pod = children.deployment["spec"]["template"]["spec"]
    fetch_env = {e["name"]: e.get("value") for e in pod["initContainers"][0]["env"]}
    assert fetch_env["LEXORA_SOURCE_KIND"] == "image"
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})


def test_the_network_policy_admits_only_the_router_to_inference_ports() -> None:
    access = TritonAccess(
        router_labels={"app.kubernetes.io/name": "lexora", "app.kubernetes.io/component": "router"},
        router_namespace="lexora",
        metrics_from=[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    )
    children = children_of("smollm2-cpu.yaml", access=access)
    policy = children.network_policy["spec"]
    pod_labels = children.deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    inference, metrics = policy["ingress"]
    assert inference["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "lexora"}},
            "podSelector": {"matchLabels": access.router_labels},
        }
    ]
    assert {p["port"] for p in inference["ports"]} == {"http", "grpc"}
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": access.metrics_from}
    assert children_of("smollm2-cpu.yaml").network_policy is None
