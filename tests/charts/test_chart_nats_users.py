"""The chart's NATS users: the bundled server carries the authorization the permissions table
renders (lexora_contracts.nats_permissions), every client connects as its own user with its
password from the Secret, and TLS mounts the server's certificate and only the CA in clients. The
rendered nats.conf is loaded by the real nats-server."""

from __future__ import annotations

import subprocess
from pathlib import Path

from chart_support import RELEASE, Helm, named, objects_of, pod_specs

from lexora_contracts.nats_permissions import CHART_PRINCIPALS, password_variable, render_authorization
from lexora_dev.stack import nats_server_binary

SERVICES = ("gateway", "auth", "billing", "usage", "router")
TLS = {"nats.tls.enabled": "true", "nats.tls.secretName": "nats-tls"}


def _env(container: dict) -> dict[str, dict]:
    return {var["name"]: var for var in container.get("env", [])}


def _nats_conf(objects: list[dict]) -> str:
    return str(named(objects, "ConfigMap", f"{RELEASE}-nats")["data"]["nats.conf"])


def test_the_bundled_server_carries_the_tables_authorization(renders: dict[str, list[dict]]) -> None:
    assert render_authorization(CHART_PRINCIPALS).strip() in _nats_conf(renders["default"])
    nats = named(renders["default"], "StatefulSet", f"{RELEASE}-nats")
    env = _env(nats["spec"]["template"]["spec"]["containers"][0])
    for principal in CHART_PRINCIPALS:
        ref = env[password_variable(principal)]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": RELEASE, "key": f"nats-password-{principal}"}


def test_every_client_connects_as_its_own_user(renders: dict[str, list[dict]]) -> None:
    clients = {**{s: f"{RELEASE}-{s}" for s in SERVICES}, "operator": f"{RELEASE}-operator"}
    for principal, deployment in clients.items():
        (container,) = named(renders["default"], "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
        env = _env(container)
        assert env["LEXORA_NATS_USER"]["value"] == principal
        password = env["LEXORA_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert password == {"name": RELEASE, "key": f"nats-password-{principal}"}
        assert "LEXORA_NATS_CA_FILE" not in env


def test_an_existing_secret_is_where_every_password_is_read(helm: Helm) -> None:
    objects = helm.template([], {"secrets.existingSecret": "mine"})
    refs = {
        var["valueFrom"]["secretKeyRef"]["name"]
        for _, spec in pod_specs(objects)
        for container in spec["containers"]
        for var in container.get("env", [])
        if "nats-password" in var.get("valueFrom", {}).get("secretKeyRef", {}).get("key", "")
    }
    assert refs == {"mine"}


def test_without_nats_users_nothing_of_them_is_rendered(helm: Helm) -> None:
    objects = helm.template([], {"nats.auth.enabled": "false"})
    assert "authorization" not in _nats_conf(objects)
    assert not any("nats-password" in key for key in named(objects, "Secret", RELEASE)["data"])
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            assert "LEXORA_NATS_USER" not in _env(container)


def test_tls_gives_the_server_its_certificate_and_clients_only_the_ca(helm: Helm) -> None:
    objects = helm.template([], TLS)
    assert "cert_file: /etc/nats/tls/tls.crt" in _nats_conf(objects)
    nats = named(objects, "StatefulSet", f"{RELEASE}-nats")["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "nats-tls"}} in nats["volumes"]
    for deployment in objects_of(objects, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        if "LEXORA_NATS_URL" not in _env(container):
            continue
        assert _env(container)["LEXORA_NATS_CA_FILE"]["value"] == "/etc/lexora/nats-ca/ca.crt"
        (ca,) = [v for v in spec["volumes"] if v["name"] == "nats-ca"]
        assert ca["secret"] == {"secretName": "nats-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_tls_without_a_certificate_is_refused(helm: Helm) -> None:
    assert "nats.tls.secretName" in helm.template_error([], {"nats.tls.enabled": "true"})


def test_nats_server_loads_the_rendered_configuration(renders: dict[str, list[dict]], tmp_path: Path) -> None:
    conf = _nats_conf(renders["default"]).replace("store_dir: /data", f"store_dir: {tmp_path / 'js'}")
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    env = {password_variable(p): f"secret{p}" for p in CHART_PRINCIPALS}
    checked = subprocess.run(
        [nats_server_binary(), "--config", str(path), "-t"], capture_output=True, text=True, env=env, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "configuration file" in (checked.stdout + checked.stderr) and "is valid" in (checked.stdout + checked.stderr)
