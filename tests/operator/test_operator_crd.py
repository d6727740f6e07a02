"""The CRD a platform engineer installs: structural, defaulted, and accepting the shipped samples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from operator_support import CRD_PATH, REPO_ROOT, SAMPLES

from lexora_operator.spec import parse_spec


def crd() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(CRD_PATH.read_text()))
    assert len(documents) == 1, "the Helm chart copies this file: keep it one plain CRD document"
    return documents[0]


def openapi_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def as_json_schema(node: Any) -> Any:
    """OpenAPI v3.0 (as Kubernetes reads it) to JSON Schema: boolean exclusiveMinimum, int-or-string."""
    if isinstance(node, list):
        return [as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server stores: defaults filled in wherever the object exists."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], v) for v in value]
        return value
    result = dict(value)
    for key, sub in (schema.get("properties") or {}).items():
        if key not in result and "default" in sub:
            result[key] = copy.deepcopy(sub["default"])
        if key in result:
            result[key] = apply_defaults(sub, result[key])
    return result


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for key, sub in (schema.get("properties") or {}).items():
        nodes += walk(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            nodes += walk(schema[key], f"{path}[]")
    return nodes


def test_crd_is_valid_kubernetes() -> None:
    kubernetes_validate.validate(crd(), "1.37", strict=True)


def test_crd_schema_is_structural() -> None:
    untyped = [
        path
        for path, node in walk(openapi_schema())
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []


def test_crd_names_status_scale_and_printer_columns() -> None:
    spec = crd()["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["shortNames"]) == (
        "serving.lexora.network",
        "Namespaced",
        ["md"],
    )
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in version["subresources"]
    shown = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert shown == ["Model", "Backend", "Ready", "Phase", "Share", "Age"]


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_samples_validate_against_the_crd_and_the_operator(sample: str) -> None:
    manifest = yaml.safe_load((SAMPLES / sample).read_text())
    jsonschema.validate(manifest, as_json_schema(openapi_schema()))
    defaulted = apply_defaults(openapi_schema(), manifest)
    parse_spec(manifest["metadata"]["name"], defaulted["spec"])


def test_crd_defaults_match_the_operator_defaults() -> None:
    """A minimal spec means the same thing whether or not the API server filled the defaults in."""
    minimal = {
        "model": {"id": "acme/tiny", "contextLength": 2048},
        "backend": "python",
        "triton": {"image": "nvcr.io/nvidia/tritonserver:25.01-py3"},
        "source": {"huggingFace": {"repo": "acme/tiny"}},
    }
    spec_schema = openapi_schema()["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, minimal)
    assert parse_spec("tiny", defaulted) == parse_spec("tiny", minimal)


@pytest.mark.parametrize(
    "bad",
    [
        {"backend": "vllm"},
        {"replicas": -1},
        {"model": {"id": "acme/tiny", "kind": "audio", "contextLength": 1}},
        {"triton": {"image": "x", "kvCacheFreeGpuMemFraction": 0}},
        {"model": {"id": "acme/tiny", "contextLength": 1, "pricing": {"inputPerMTok": "-1"}}},
        {"source": {"objectStore": {"uri": "ftp://old/model"}}},
    ],
)
def test_crd_schema_refuses_bad_values_at_apply_time(bad: dict[str, Any]) -> None:
    manifest = yaml.safe_load((SAMPLES / "flux-1-schnell.yaml").read_text())
    manifest["spec"].update(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, as_json_schema(openapi_schema()))


OPERATOR_MANIFESTS = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "manifests/operator").glob("*.yaml"))


@pytest.mark.parametrize("path", OPERATOR_MANIFESTS)
def test_operator_manifests_are_valid_kubernetes(path: str) -> None:
    for document in yaml.safe_load_all(Path(REPO_ROOT, path).read_text()):
        kubernetes_validate.validate(document, "1.37", strict=True)


def test_operator_rbac_covers_every_kind_it_renders() -> None:
    documents = list(yaml.safe_load_all(Path(REPO_ROOT, "manifests/operator/10-rbac.yaml").read_text()))
    rules = next(d for d in documents if d["kind"] == "ClusterRole")["rules"]
    granted = {
        (group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    for group, resource in [
        ("apps", "deployments"),
        ("", "services"),
        ("", "configmaps"),
        ("policy", "poddisruptionbudgets"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("networking.k8s.io", "networkpolicies"),
    ]:
        for verb in ("get", "create", "patch", "delete"):
            assert (group, resource, verb) in granted, (group, resource, verb)
    assert ("serving.lexora.network", "modeldeployments/status", "patch") in granted
    assert ("", "secrets", "get") in granted and ("", "secrets", "list") not in granted
    assert ("", "events", "create") in granted
    assert not any(verb == "*" or resource == "*" for _, resource, verb in granted)
