"""The chart's CRD is the operator's CRD, samples fit it, and the rendered install matches the chart."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_support import CHART_DIR, REPO_ROOT, Helm, objects_of

CRD_NAME = "modeldeployments.serving.lexora.network.yaml"
MANIFEST_CRD = REPO_ROOT / "manifests" / "crds" / CRD_NAME
CHART_CRD = CHART_DIR / "crds" / CRD_NAME
SAMPLES = sorted((REPO_ROOT / "manifests" / "samples").glob("*.yaml"))
INSTALL = REPO_ROOT / "manifests" / "install" / "lexora.yaml"


def test_chart_crd_is_a_byte_identical_copy_of_the_manifest() -> None:
    assert MANIFEST_CRD.exists(), f"{MANIFEST_CRD.relative_to(REPO_ROOT)} is missing"
    assert CHART_CRD.read_bytes() == MANIFEST_CRD.read_bytes(), "run scripts/sync-crds.sh"


def test_chart_crd_is_a_valid_custom_resource_definition() -> None:
    (crd,) = [doc for doc in yaml.safe_load_all(CHART_CRD.read_text()) if doc]
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)
    assert crd["spec"]["group"] == "serving.lexora.network"
    assert crd["spec"]["names"]["kind"] == "ModelDeployment"


def _served_schemas() -> dict[str, dict]:
    (crd,) = [doc for doc in yaml.safe_load_all(CHART_CRD.read_text()) if doc]
    group = crd["spec"]["group"]
    return {
        f"{group}/{version['name']}": version["schema"]["openAPIV3Schema"]
        for version in crd["spec"]["versions"]
        if version["served"]
    }


@pytest.mark.parametrize("sample", SAMPLES, ids=[path.name for path in SAMPLES])
def test_sample_model_deployments_fit_the_crd_schema(sample: Path) -> None:
    schemas = _served_schemas()
    for doc in yaml.safe_load_all(sample.read_text()):
        if not doc or doc.get("kind") != "ModelDeployment":
            continue
        assert doc["apiVersion"] in schemas, f"{sample.name}: {doc['apiVersion']} is not served by the CRD"
        # OpenAPI v3.0 schemas follow draft 4 (boolean exclusiveMinimum); x-kubernetes-* keys are ignored.
        jsonschema.Draft4Validator(schemas[doc["apiVersion"]]).validate(doc)


def test_rendered_install_is_up_to_date(helm: Helm, tmp_path: Path) -> None:
    assert INSTALL.exists(), "run scripts/render-install.sh"
    fresh = tmp_path / "lexora.yaml"
    env = {**os.environ, "HELM": str(helm.binary), "HOME": str(helm.home)}
    env.update({name: str(helm.home / name.lower()) for name in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME")})
    subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "render-install.sh"), str(fresh)],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert fresh.read_text() == INSTALL.read_text(), "manifests/install/lexora.yaml is stale: rerun the script"


def test_rendered_install_brings_everything_but_secrets() -> None:
    objects = [doc for doc in yaml.safe_load_all(INSTALL.read_text()) if doc]
    assert not objects_of(objects, "Secret"), "the committed install must not carry secrets"
    assert not objects_of(objects, "Pod"), "helm test pods are for helm users"
    assert [crd["metadata"]["name"] for crd in objects_of(objects, "CustomResourceDefinition")] == [
        "modeldeployments.serving.lexora.network"
    ]
    assert len(objects_of(objects, "Deployment")) == 6
    assert objects_of(objects, "Job"), "the migration Job runs for kubectl users too"


STANDALONE_OPERATOR = REPO_ROOT / "manifests" / "operator"


def _documents(paths: list[Path]) -> list[dict]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def _operator_env(objects: list[dict]) -> dict[str, str | None]:
    (deployment,) = [o for o in objects_of(objects, "Deployment") if o["metadata"]["name"] == "lexora-operator"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {var["name"]: var.get("value") for var in container["env"]}


def _operator_secret_refs(objects: list[dict]) -> dict[str, dict]:
    (deployment,) = [o for o in objects_of(objects, "Deployment") if o["metadata"]["name"] == "lexora-operator"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"] if "secretKeyRef" in v.get("valueFrom", {})
    }


@pytest.mark.parametrize(
    "paths",
    [sorted(STANDALONE_OPERATOR.glob("*.yaml")), [INSTALL]],
    ids=["manifests/operator", "manifests/install"],
)
def test_standalone_manifests_create_the_namespace_they_use_before_using_it(paths: list[Path]) -> None:
    """kubectl applies a directory in file order and a file in document order."""
    objects = _documents(paths)
    created: list[str] = []
    for obj in objects:
        if obj["kind"] == "Namespace":
            created.append(obj["metadata"]["name"])
        namespace = obj["metadata"].get("namespace")
        assert namespace is None or namespace in created, f"{obj['kind']}/{obj['metadata']['name']} before {namespace}"
    for obj in objects_of(objects, "ClusterRoleBinding"):
        for subject in obj["subjects"]:
            assert subject["namespace"] in created


def test_the_standalone_operator_reaches_the_nats_and_router_the_chart_installs(renders: dict[str, list[dict]]) -> None:
    """manifests/operator/ goes with the chart's release "lexora" in namespace "lexora" (operator
    disabled there): the same NATS address and router as the chart's own operator gets, and pod
    labels the chart's NetworkPolicy admits."""
    chart = renders["default"]
    standalone = _documents(sorted(STANDALONE_OPERATOR.glob("*.yaml")))
    theirs, ours = _operator_env(chart), _operator_env(standalone)
    for name in ("LEXORA_NATS_URL", "LEXORA_NATS_USER", "LEXORA_ROUTER_NAMESPACE", "LEXORA_TRITON_NETWORK_POLICY"):
        assert ours[name] == theirs[name], name
    assert _operator_secret_refs(standalone) == _operator_secret_refs(chart)
    assert json.loads(ours["LEXORA_ROUTER_POD_LABELS"]) == json.loads(theirs["LEXORA_ROUTER_POD_LABELS"])
    assert _operator_env(_documents([INSTALL]))["LEXORA_NATS_URL"] == theirs["LEXORA_NATS_URL"]
    (deployment,) = objects_of(standalone, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    internal = [p for p in objects_of(chart, "NetworkPolicy") if p["metadata"]["name"] == "lexora-internal"]
    (peer,) = internal[0]["spec"]["ingress"][0]["from"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["metadata"]["namespace"] == "lexora"
