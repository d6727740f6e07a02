"""What the chart promises about security and operability, asserted on its rendered objects."""

from __future__ import annotations

import json

import pytest
from chart_support import NAMESPACE, RELEASE, Helm, named, objects_of, pod_specs

from lexora_contracts.nats_permissions import CHART_PRINCIPALS, password_variable
from lexora_operator.render import TritonAccess, render_network_policy

RELEASE_SELECTOR = {"app.kubernetes.io/name": "lexora", "app.kubernetes.io/instance": RELEASE}


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_no_container_runs_as_root(renders: dict[str, list[dict]], value_set: str) -> None:
    workloads = pod_specs(renders[value_set])
    kinds = {name.split("/")[0] for name, _ in workloads}
    assert {"Deployment", "Job", "Pod"} <= kinds, "the migration Job and the helm test pod must be checked too"
    for workload, spec in workloads:
        pod = spec.get("securityContext", {})
        for container in _containers(spec):
            own = container.get("securityContext", {})
            where = f"{workload} container {container['name']}"
            assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            user = own.get("runAsUser", pod.get("runAsUser"))
            assert user is not None and user != 0, f"{where} runs as uid {user}"
            assert own.get("allowPrivilegeEscalation") is False, where
            assert own.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not own.get("privileged", False), where


def test_every_workload_has_probes_and_resource_requests_and_limits(
    renders: dict[str, list[dict]], value_set: str
) -> None:
    long_running = [(name, spec) for name, spec in pod_specs(renders[value_set]) if name.split("/")[0] != "Job"]
    deployments = [name for name, _ in long_running if name.startswith("Deployment/")]
    assert len(deployments) == 6
    for workload, spec in long_running:
        for container in spec["containers"]:
            where = f"{workload} container {container['name']}"
            if not workload.startswith("Pod/"):
                assert "livenessProbe" in container and "readinessProbe" in container, where
                _assert_probes_use_declared_ports(container, where)
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where} lacks {bound}"


def _assert_probes_use_declared_ports(container: dict, where: str) -> None:
    ports = {port["name"] for port in container.get("ports", [])}
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(probe_name)
        if probe and "httpGet" in probe:
            assert probe["httpGet"]["port"] in ports, f"{where} {probe_name} probes an undeclared port"


def test_gateway_probes_livez_and_readyz_not_health(renders: dict[str, list[dict]]) -> None:
    (container,) = named(renders["default"], "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert env["LEXORA_HOST"] == "0.0.0.0"


def test_services_listen_on_all_interfaces_for_metrics(renders: dict[str, list[dict]]) -> None:
    for component in ("auth", "billing", "usage", "router"):
        spec = named(renders["default"], "Deployment", f"{RELEASE}-{component}")["spec"]["template"]["spec"]
        env = {var["name"]: var.get("value") for var in spec["containers"][0]["env"]}
        assert env["LEXORA_METRICS_HOST"] == "0.0.0.0", component
        assert env["LEXORA_METRICS_PORT"] == "9090", component


# --- network policies ----------------------------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    assert not selector.get("matchExpressions"), "the chart's policies select by labels only"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _is_release_peer(peer: dict) -> bool:
    """A peer that admits only pods of this release (no namespaceSelector, no ipBlock)."""
    return set(peer) == {"podSelector"} and RELEASE_SELECTOR.items() <= peer["podSelector"]["matchLabels"].items()


def test_network_policies_let_only_the_gateway_receive_outside_traffic(
    renders: dict[str, list[dict]], value_set: str
) -> None:
    objects = renders[value_set]
    policies = objects_of(objects, "NetworkPolicy")
    assert policies, "NetworkPolicies are on by default and in every ci value set"
    pod_labels = {
        obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"]
        for obj in objects
        if obj["kind"] in ("Deployment", "StatefulSet")
    }
    for name, labels in pod_labels.items():
        assert any(_selects(policy["spec"]["podSelector"], labels) for policy in policies), f"{name} is unprotected"
        assert any("Ingress" in policy["spec"]["policyTypes"] for policy in policies)

    for policy in policies:
        selector = policy["spec"]["podSelector"]
        only_gateway = selector.get("matchLabels", {}).get("app.kubernetes.io/component") == "gateway"
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            outside = not peers or not all(_is_release_peer(peer) for peer in peers)
            if not outside or only_gateway:
                continue
            # Outside peers may reach other pods only to scrape metrics (networkPolicy.metricsFrom).
            ports = [port["port"] for port in rule.get("ports", [])]
            assert ports == ["metrics"] and peers, (
                f"NetworkPolicy/{policy['metadata']['name']} admits outside traffic to non-gateway pods: {rule}"
            )


def test_the_gateway_is_open_by_default_and_restrictable(renders: dict[str, list[dict]]) -> None:
    default = named(renders["default"], "NetworkPolicy", f"{RELEASE}-gateway")["spec"]["ingress"]
    assert default == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    production = named(renders["production"], "NetworkPolicy", f"{RELEASE}-gateway")["spec"]["ingress"]
    assert production[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]


# --- secrets -------------------------------------------------------------------------------------

INLINE_SECRETS = {
    "secrets.keyPepper": "inline-pepper-must-not-render",
    "secrets.consoleSecret": "inline-console-secret-must-not-render",
    "secrets.oidcClientSecret": "inline-oidc-secret-must-not-render",
    "secrets.databaseUrl": "postgresql+asyncpg://u:inline-db-password@db:5432/lexora",
    "secrets.postgresPassword": "inline-postgres-password",
    "secrets.stripeSecretKey": "sk_test_inline_must_not_render",
    "secrets.stripeWebhookSecret": "whsec_inline_must_not_render",
}
SECRET_ENV = {
    "LEXORA_KEY_PEPPER",
    "LEXORA_CONSOLE_SECRET",
    "LEXORA_OIDC_CLIENT_SECRET",
    "LEXORA_DATABASE_URL",
    "POSTGRES_PASSWORD",
    "LEXORA_STRIPE_SECRET_KEY",
    "LEXORA_STRIPE_WEBHOOK_SECRET",
    "LEXORA_NATS_PASSWORD",
    *(password_variable(p) for p in CHART_PRINCIPALS),
}
NATS_GIVEN = {f"secrets.natsPasswords.{p}": f"given{p}" for p in CHART_PRINCIPALS}
ALL_NATS = "secrets.natsPasswords.{" + ",".join(CHART_PRINCIPALS) + "}"


def _secret_refs(objects: list[dict]) -> set[str]:
    refs = set()
    for _, spec in pod_specs(objects):
        for container in _containers(spec):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add(ref["name"])
    return refs


@pytest.mark.parametrize("bundled_postgres", [True, False], ids=["bundled-postgres", "external-postgres"])
def test_existing_secret_keeps_every_secret_out_of_the_rendered_chart(helm: Helm, bundled_postgres: bool) -> None:
    values = {**INLINE_SECRETS, "secrets.existingSecret": "team-managed", "postgresql.enabled": str(bundled_postgres)}
    objects = helm.template([], values)
    assert not objects_of(objects, "Secret"), "with existingSecret the chart must render no Secret"
    rendered = repr(objects)
    for key, value in INLINE_SECRETS.items():
        assert value not in rendered, f"{key} leaked into the rendered chart"
    assert _secret_refs(objects) == {"team-managed"}


def test_secret_values_reach_pods_only_through_secret_refs(renders: dict[str, list[dict]], value_set: str) -> None:
    for workload, spec in pod_specs(renders[value_set]):
        for container in _containers(spec):
            for var in container.get("env", []):
                if var["name"] not in SECRET_ENV or "valueFrom" in var:
                    continue
                # The bundled database URL is assembled from the password reference, never spelled out.
                assert var["name"] == "LEXORA_DATABASE_URL" and "$(POSTGRES_PASSWORD)" in var["value"], (
                    f"{workload} {container['name']} has {var['name']} inline"
                )


def test_generated_secret_holds_what_the_services_read(renders: dict[str, list[dict]]) -> None:
    nats_passwords = {f"nats-password-{p}" for p in CHART_PRINCIPALS}
    bundled = named(renders["default"], "Secret", RELEASE)
    assert set(bundled["data"]) == {"key-pepper", "console-secret", "postgres-password", *nats_passwords}
    assert bundled["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    external = named(renders["external-db"], "Secret", RELEASE)
    assert set(external["data"]) == {
        "key-pepper",
        "console-secret",
        "database-url",
        "stripe-secret-key",
        "stripe-webhook-secret",
        *nats_passwords,
    }


# --- hooks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["production", "external-db"])
def test_migration_job_runs_before_install_and_upgrade_with_an_external_database(
    renders: dict[str, list[dict]], name: str
) -> None:
    objects = renders[name]
    job = named(objects, "Job", f"{RELEASE}-migrations")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["lexora", "migrate"]
    (ref,) = _secret_refs([job])
    if name == "external-db":
        # The release's Secret does not exist yet before install: the Job reads a hook Secret made just before it.
        hook_secret = named(objects, "Secret", ref)
        assert "pre-install" in hook_secret["metadata"]["annotations"]["helm.sh/hook"]
        assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )
    else:
        assert ref == "lexora-secrets", "an existing Secret is there before install"


def test_migration_job_waits_for_the_bundled_postgres_after_install(renders: dict[str, list[dict]]) -> None:
    job = named(renders["default"], "Job", f"{RELEASE}-migrations")
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {"post-install", "pre-upgrade"}
    assert [c["name"] for c in job["spec"]["template"]["spec"]["initContainers"]] == ["wait-for-postgres"]


def test_helm_test_pod_asks_the_gateway_for_v1_health(renders: dict[str, list[dict]]) -> None:
    (pod,) = objects_of(renders["default"], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(pod["spec"]["containers"][0]["command"])
    assert f"http://{RELEASE}-gateway.lexora.svc:80/v1/health" in script
    assert pod["spec"]["restartPolicy"] == "Never"


# --- operator ------------------------------------------------------------------------------------


def test_operator_is_a_single_standalone_replica_with_the_rbac_it_needs(renders: dict[str, list[dict]]) -> None:
    objects = renders["default"]
    deployment = named(objects, "Deployment", f"{RELEASE}-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    rules = named(objects, "ClusterRole", f"{RELEASE}-operator")["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in grant for grant in granted), "no wildcards"
    needed = [
        ("serving.lexora.network", "modeldeployments", "watch"),
        ("serving.lexora.network", "modeldeployments/status", "patch"),
        ("serving.lexora.network", "modeldeployments/finalizers", "update"),
        ("apps", "deployments", "create"),
        ("", "services", "patch"),
        ("", "configmaps", "delete"),
        ("policy", "poddisruptionbudgets", "create"),
        ("autoscaling", "horizontalpodautoscalers", "create"),
        ("keda.sh", "scaledobjects", "create"),
        ("keda.sh", "scaledobjects", "delete"),
        ("", "events", "create"),
        ("", "pods", "list"),
        ("", "nodes", "watch"),
    ]
    assert [grant for grant in needed if grant not in granted] == []
    assert ("", "pods", "delete") not in granted and ("", "nodes", "patch") not in granted
    binding = named(objects, "ClusterRoleBinding", f"{RELEASE}-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": "lexora"}]


def test_operator_rbac_covers_network_policies_and_reads_source_secrets(renders: dict[str, list[dict]]) -> None:
    rules = named(renders["default"], "ClusterRole", f"{RELEASE}-operator")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for verb in ("get", "create", "patch", "delete"):
        assert ("networking.k8s.io", "networkpolicies", verb) in granted
    assert ("", "secrets", "get") in granted
    assert ("", "secrets", "list") not in granted and ("", "secrets", "watch") not in granted


def test_operator_rbac_reads_endpoint_slices_and_scales_models(renders: dict[str, list[dict]]) -> None:
    """Every ready Triton pod is published from its Service's EndpointSlices (read-only), and models
    are scaled to zero and back on demand (the ModelDeployment's or the Deployment's scale)."""
    rules = named(renders["default"], "ClusterRole", f"{RELEASE}-operator")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for verb in ("get", "list", "watch"):
        assert ("discovery.k8s.io", "endpointslices", verb) in granted
    assert {v for _, r, v in granted if r == "endpointslices"} == {"get", "list", "watch"}
    for group, resource in (("serving.lexora.network", "modeldeployments"), ("apps", "deployments")):
        assert (group, resource, "patch") in granted and (group, f"{resource}/scale", "patch") in granted


def test_operator_rbac_covers_the_model_cache(renders: dict[str, list[dict]]) -> None:
    """A PVC and Jobs per model (kopf watches the Jobs), and the fill pod's log for its progress."""
    rules = named(renders["default"], "ClusterRole", f"{RELEASE}-operator")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for verb in ("get", "list", "watch", "create", "delete"):
        assert ("batch", "jobs", verb) in granted
    for verb in ("get", "create", "patch", "delete"):
        assert ("", "persistentvolumeclaims", verb) in granted
    assert ("", "pods/log", "get") in granted
    assert ("", "persistentvolumeclaims", "list") not in granted


def test_the_model_cache_storage_class_reaches_the_operator(helm: Helm) -> None:
    assert "LEXORA_CACHE_STORAGE_CLASS" not in _operator_env(helm.template([], None)), "no cache by default"
    env = _operator_env(helm.template([], {"operator.modelCache.storageClassName": "nfs-rwx"}))
    assert env["LEXORA_CACHE_STORAGE_CLASS"] == "nfs-rwx"


def test_watching_one_namespace_grants_a_role_there_and_only_nodes_cluster_wide(helm: Helm) -> None:
    objects = helm.template([], {"operator.watchNamespace": "lexora-models"})
    cluster_role = named(objects, "ClusterRole", f"{RELEASE}-operator")
    assert [rule["resources"] for rule in cluster_role["rules"]] == [["nodes"]]
    assert {verb for rule in cluster_role["rules"] for verb in rule["verbs"]} <= {"get", "list", "watch"}
    role = named(objects, "Role", f"{RELEASE}-operator")
    assert role["metadata"]["namespace"] == "lexora-models"
    assert ["modeldeployments"] in [rule["resources"] for rule in role["rules"]]
    binding = named(objects, "RoleBinding", f"{RELEASE}-operator")
    assert binding["metadata"]["namespace"] == "lexora-models"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": "lexora"}]
    env = _operator_env(objects)
    assert env["LEXORA_WATCH_NAMESPACE"] == "lexora-models"
    assert "LEXORA_WATCH_NAMESPACE" not in _operator_env(helm.template([], None))


def _operator_env(objects: list[dict]) -> dict[str, str | None]:
    deployment = named(objects, "Deployment", f"{RELEASE}-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {var["name"]: var.get("value") for var in container["env"]}


@pytest.mark.parametrize("value_set", ["default", "production", "minimal"])
def test_triton_network_policies_admit_exactly_this_release_router(
    renders: dict[str, list[dict]], value_set: str
) -> None:
    """The operator renders each model's NetworkPolicy from the router labels the chart hands it:
    they must select this release's router pods, and no other Deployment's."""
    objects = renders[value_set]
    env = _operator_env(objects)
    assert env["LEXORA_TRITON_NETWORK_POLICY"] == "true"
    access = TritonAccess(
        router_labels=json.loads(env["LEXORA_ROUTER_POD_LABELS"]),
        router_namespace=env["LEXORA_ROUTER_NAMESPACE"],
        metrics_from=json.loads(env["LEXORA_TRITON_METRICS_FROM"]),
    )
    policy = render_network_policy("smollm2-135m-instruct", "lexora-models", access)
    (peer,) = policy["spec"]["ingress"][0]["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    selected = [
        obj["metadata"]["name"]
        for obj in objects
        if obj["kind"] in ("Deployment", "StatefulSet")
        and _selects(peer["podSelector"], obj["spec"]["template"]["metadata"]["labels"])
    ]
    assert selected == [f"{RELEASE}-router"]
    if value_set == "production":
        monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        assert access.metrics_from == [monitoring]


def test_network_policy_off_turns_the_triton_policies_off(helm: Helm) -> None:
    env = _operator_env(helm.template([], {"networkPolicy.enabled": "false"}))
    assert env["LEXORA_TRITON_NETWORK_POLICY"] == "false"


# --- secrets under GitOps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "refused"),
    [
        pytest.param(
            {},
            f"secrets.keyPepper and secrets.consoleSecret and secrets.postgresPassword and {ALL_NATS}",
            id="bundled-postgres",
        ),
        pytest.param(
            {"secrets.postgresPassword": "given", "secrets.consoleSecret": "c", **NATS_GIVEN},
            "secrets.keyPepper",
            id="pepper-only",
        ),
        pytest.param(
            {"secrets.keyPepper": "p", "secrets.postgresPassword": "w", **NATS_GIVEN},
            "secrets.consoleSecret",
            id="console-secret-only",
        ),
        pytest.param(
            {
                "postgresql.enabled": "false",
                "secrets.databaseUrl": "postgresql+asyncpg://u:p@db:5432/x",
                "secrets.consoleSecret": "c",
                **NATS_GIVEN,
            },
            "secrets.keyPepper",
            id="external-postgres",
        ),
        pytest.param(
            {
                "secrets.keyPepper": "p",
                "secrets.consoleSecret": "c",
                "secrets.postgresPassword": "w",
                "secrets.natsPasswords.admin": "given",
            },
            "secrets.natsPasswords.{gateway,auth,billing,usage,router,operator}",
            id="nats-passwords-but-admin",
        ),
        pytest.param(
            {"nats.auth.enabled": "false"},
            "secrets.keyPepper and secrets.consoleSecret and secrets.postgresPassword",
            id="no-nats-auth",
        ),
    ],
)
def test_without_a_cluster_the_chart_refuses_to_generate_secrets(
    helm: Helm, values: dict[str, str], refused: str
) -> None:
    """helm template / Argo CD cannot look the live Secret up: a generated pepper would change on
    every render (and invalidate every API key), so the chart says what to give instead."""
    error = helm.template_error([], values, offline_secrets=False)
    assert f"refusing to generate {refused}:" in error
    assert "secrets.existingSecret" in error and "GitOps" in error


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"secrets.existingSecret": "lexora-secrets"}, id="existing-secret"),
        pytest.param(
            {"secrets.keyPepper": "p", "secrets.consoleSecret": "c", "secrets.postgresPassword": "w", **NATS_GIVEN},
            id="inline",
        ),
    ],
)
def test_without_a_cluster_given_secrets_render(helm: Helm, values: dict[str, str]) -> None:
    args = helm.template_args([], values, offline_secrets=False)
    assert helm.run(*args).returncode == 0


def test_the_console_gets_its_secret_signup_mode_and_oidc_from_values(helm: Helm) -> None:
    """Outside development the gateway refuses to start on the built-in console secret, so the chart
    must hand it the generated one; sign-up mode and OpenID Connect come from values."""
    values = {
        "console.signupMode": "invite",
        "console.oidc.issuer": "https://idp.example.com",
        "console.oidc.clientId": "lexora",
        "secrets.oidcClientSecret": "oidc-secret-must-not-render",
    }
    objects = helm.template([], values)
    env = {
        component: {var["name"]: var for c in _containers(spec) for var in c.get("env", [])}
        for component, spec in pod_specs(objects)
    }
    gateway = env[f"Deployment/{RELEASE}-gateway"]
    assert gateway["LEXORA_ENVIRONMENT"]["value"] == "production"
    assert gateway["LEXORA_CONSOLE_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": RELEASE, "key": "console-secret"}
    assert gateway["LEXORA_OIDC_ISSUER"]["value"] == "https://idp.example.com"
    assert gateway["LEXORA_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "oidc-client-secret"
    assert env[f"Deployment/{RELEASE}-auth"]["LEXORA_SIGNUP_MODE"]["value"] == "invite"
    assert "oidc-secret-must-not-render" not in repr([o for o in objects if o["kind"] != "Secret"])
