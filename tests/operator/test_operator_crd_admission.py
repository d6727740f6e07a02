"""The CRD's schema defaults and CEL rules, run as kube-apiserver runs them (crd_admission, cel-python):
what the API emulator of the cluster in a box (tests/cluster) applies to every ModelDeployment write."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from crd_admission import CrdSchema
from operator_support import CRD_PATH, SAMPLES, load_sample

SCHEMA = CrdSchema.from_file(CRD_PATH)


def admit(manifest: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    admitted, causes = SCHEMA.admit(manifest)
    return admitted, [str(c) for c in causes]


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_every_sample_is_admitted(sample: str) -> None:
    assert admit(load_sample(sample))[1] == []


def test_defaults_are_filled_in_and_unknown_fields_pruned() -> None:
    manifest = load_sample("smollm2-cpu.yaml")
    del manifest["spec"]["model"]["kind"]
    manifest["spec"]["notAField"] = True
    admitted, causes = admit(manifest)
    assert causes == []
    assert admitted["spec"]["model"]["kind"] == "chat"
    assert admitted["spec"]["source"]["fetcherImage"] == "ghcr.io/lexora/model-fetcher:0.1.0"
    assert admitted["spec"]["cache"]["sizeLimit"] == "100Gi"
    assert "notAField" not in admitted["spec"]
    assert admitted["metadata"] == manifest["metadata"]


def broken(sample: str, change: Any) -> list[str]:
    manifest = copy.deepcopy(load_sample(sample))
    change(manifest)
    return admit(manifest)[1]


def test_cel_rules_refuse_what_the_crd_forbids() -> None:
    def two_sources(m: dict[str, Any]) -> None:
        m["spec"]["source"]["pvc"] = {"claimName": "weights"}

    def scale_inverted(m: dict[str, Any]) -> None:
        m["spec"]["autoscaling"].update(minReplicas=5, maxReplicas=2)

    def long_name(m: dict[str, Any]) -> None:
        m["metadata"]["name"] = "x" * 64

    def embedding_on_tensorrt(m: dict[str, Any]) -> None:
        m["spec"]["model"]["kind"] = "embedding"

    assert broken("smollm2-cpu.yaml", two_sources) == [
        "spec.source: Invalid value: set exactly one of pvc, objectStore, huggingFace, image"
    ]
    assert broken("llama-3.2-3b-instruct.yaml", scale_inverted) == [
        "spec.autoscaling: Invalid value: minReplicas must not be above maxReplicas"
    ]
    assert broken("smollm2-cpu.yaml", long_name) == [
        "<root>: Invalid value: metadata.name must be at most 63 characters (it names the Service)"
    ]
    assert broken("llama-3.2-3b-instruct.yaml", embedding_on_tensorrt) == [
        "spec: Invalid value: backend tensorrtllm serves chat models only"
    ]


def test_schema_types_enums_and_required_fields_are_checked() -> None:
    def bad(m: dict[str, Any]) -> None:
        m["spec"]["backend"] = "vllm"
        m["spec"]["replicas"] = "two"
        del m["spec"]["triton"]["image"]

    causes = broken("smollm2-cpu.yaml", bad)
    assert any(c.startswith("spec.backend: Unsupported value: 'vllm'") for c in causes)
    assert any(c.startswith("spec.replicas: Invalid value: 'two'") for c in causes)
    assert "spec.triton.image: Required value" in causes


def scaled(manifest: dict[str, Any], replicas: int) -> dict[str, Any]:
    """What `kubectl scale` stores: the object with spec.replicas set through the scale subresource,
    validated as an update of the whole object (CEL transition rules included)."""
    new = copy.deepcopy(manifest)
    new["spec"]["replicas"] = replicas
    return new


def test_kubectl_scale_is_refused_with_a_message_while_an_hpa_owns_the_replicas() -> None:
    stored, causes = admit(load_sample("llama-3.2-3b-instruct.yaml"))
    assert causes == [] and stored["spec"]["autoscaling"]["provider"] == "hpa"
    _, causes = SCHEMA.admit(scaled(stored, 3), stored)
    assert [str(c) for c in causes] == [
        "spec: Invalid value: spec.replicas is ignored while spec.autoscaling is set (provider hpa): "
        "change autoscaling.minReplicas/maxReplicas instead, or remove spec.autoscaling"
    ]
    # The same count, and any other change, passes; so does the create that sets both at once.
    assert SCHEMA.admit(scaled(stored, stored["spec"]["replicas"]), stored)[1] == []
    retargeted = copy.deepcopy(stored)
    retargeted["spec"]["autoscaling"]["maxReplicas"] = 8
    assert SCHEMA.admit(retargeted, stored)[1] == []
    assert admit(scaled(load_sample("llama-3.2-3b-instruct.yaml"), 3))[1] == []


def test_kubectl_scale_works_without_autoscaling_and_under_keda() -> None:
    fixed, causes = admit(load_sample("smollm2-cpu.yaml"))
    assert causes == [] and "autoscaling" not in fixed["spec"]
    assert SCHEMA.admit(scaled(fixed, 3), fixed)[1] == []
    keda_manifest = load_sample("llama-3.2-3b-instruct.yaml")
    keda_manifest["spec"]["autoscaling"]["provider"] = "keda"
    keda, causes = admit(keda_manifest)
    assert causes == []
    assert SCHEMA.admit(scaled(keda, 3), keda)[1] == []  # KEDA's own writes go the same way
    # Turning autoscaling off and setting the count in one write is how to take the count back.
    autoscaled, _ = admit(load_sample("llama-3.2-3b-instruct.yaml"))
    manual = scaled(autoscaled, 3)
    del manual["spec"]["autoscaling"]
    assert SCHEMA.admit(manual, autoscaled)[1] == []


def test_the_autoscaling_provider_is_hpa_or_keda() -> None:
    def unknown_provider(m: dict[str, Any]) -> None:
        m["spec"]["autoscaling"]["provider"] = "vpa"

    assert broken("llama-3.2-3b-instruct.yaml", unknown_provider) == [
        'spec.autoscaling.provider: Unsupported value: \'vpa\': supported values: "hpa", "keda"'
    ]
