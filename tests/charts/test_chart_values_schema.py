"""values.schema.json is strict: helm refuses unknown keys, wrong types and unsafe values before rendering."""

from __future__ import annotations

import json

import pytest
from chart_support import CHART_DIR, Helm

SCHEMA_ERROR = "values don't meet the specifications of the schema"

# Kubernetes structures the chart passes through unchanged; the API server validates them.
PASS_THROUGH = {"podSecurityContext", "securityContext", "envList", "k8sObject", "k8sList", "stringMap"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        pytest.param({"replicas": "3"}, "'replicas' not allowed", id="unknown-top-level-key"),
        pytest.param({"gateway.replicas": "3"}, "'replicas' not allowed", id="unknown-nested-key"),
        pytest.param({"ingress.tls[0].secret": "x"}, "'secret' not allowed", id="unknown-key-in-list-item"),
        pytest.param({"gateway.port": "http"}, "/gateway/port", id="wrong-type"),
        pytest.param({"gateway.autoscaling.enabled": "yes"}, "/gateway/autoscaling/enabled", id="string-for-bool"),
        pytest.param({"environment": "prod"}, "/environment", id="not-an-environment"),
        pytest.param({"logLevel": "verbose"}, "/logLevel", id="not-a-log-level"),
        pytest.param({"podSecurityContext.runAsUser": "0"}, "/podSecurityContext/runAsUser", id="root-pods"),
        pytest.param({"securityContext.runAsNonRoot": "false"}, "/securityContext/runAsNonRoot", id="root-allowed"),
        pytest.param({"securityContext.privileged": "true"}, "/securityContext/privileged", id="privileged"),
        pytest.param({"nats.url": "http://nats:4222"}, "/nats/url", id="nats-url-scheme"),
        pytest.param({"secrets.databaseUrl": "postgres://u:p@db/lexora"}, "/secrets/databaseUrl", id="db-driver"),
        pytest.param({"secrets.postgresPassword": "p@ss/word"}, "/secrets/postgresPassword", id="password-unsafe"),
        pytest.param({"gateway.resources.limits": "null"}, "/gateway/resources", id="resources-without-limits"),
        pytest.param({"image.digest": "latest"}, "/image/digest", id="digest-not-sha256"),
        pytest.param({"gateway.service.type": "ExternalName"}, "/gateway/service/type", id="service-type"),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, values: dict[str, str], complaint: str) -> None:
    error = helm.template_error([], values)
    assert SCHEMA_ERROR in error
    assert complaint in error, error


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        pytest.param({"nats.enabled": "false"}, "nats.url is required", id="external-nats-without-url"),
        pytest.param({"postgresql.enabled": "false"}, "secrets.databaseUrl", id="external-postgres-without-url"),
    ],
)
def test_external_backends_need_their_connection(helm: Helm, values: dict[str, str], complaint: str) -> None:
    assert complaint in helm.template_error([], values)


def _schema_nodes(node: object, path: str = "#"):
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            yield from _schema_nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _schema_nodes(child, f"{path}/{index}")


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    open_objects = [
        path
        for path, node in _schema_nodes(schema)
        if "properties" in node
        and node.get("additionalProperties") is not False
        and path.split("/")[-1] not in PASS_THROUGH
        and not path.startswith(tuple(f"#/definitions/{name}/" for name in PASS_THROUGH))
    ]
    assert open_objects == []


@pytest.mark.parametrize("component", ["gateway", "router"])
def test_autoscaling_min_above_max_is_refused(helm: Helm, component: str) -> None:
    """JSON schema cannot compare two fields: the HPA template fails instead, naming both."""
    values = {f"{component}.autoscaling.minReplicas": "5", f"{component}.autoscaling.maxReplicas": "3"}
    assert f"{component}.autoscaling: minReplicas (5) is above maxReplicas (3)" in helm.template_error([], values)
    equal = {f"{component}.autoscaling.minReplicas": "3", f"{component}.autoscaling.maxReplicas": "3"}
    assert helm.template([], equal)
