"""The package boundaries of docs/architecture.md ("Packages"), checked on the source itself.

A service's `client` module is the only thing another package imports from it; nothing imports
the gateway; production packages never import the local-stack tooling at module level.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("lexora_auth", "lexora_billing", "lexora_usage", "lexora_router")
PRODUCTION = (
    *SERVICES,
    "lexora_gateway",
    "lexora_console",
    "lexora_contracts",
    "lexora_runtime",
    "lexora_db",
    "lexora_operator",
)


def _python_files(root: Path) -> list[Path]:
    """The project's own Python files under `root`: not what hidden folders hold (bench/.venv-litellm,
    made by `make bench`, is a whole virtualenv)."""
    return [
        p for p in sorted(root.rglob("*.py")) if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _sources() -> Iterator[tuple[str, Path]]:
    for root in (REPO / "services", REPO / "operator", REPO / "bench"):
        for path in _python_files(root):
            relative = path.relative_to(root)
            package = "bench" if root.name == "bench" else relative.parts[0]
            yield package, path


def _imports(path: Path, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from lexora_billing import ledger` names a module too
                yield node.lineno, f"{node.module}.{alias.name}"


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


def test_other_packages_import_a_service_through_its_client_only() -> None:
    crossings = [
        f"{_where(path, line)} imports {module}"
        for package, path in _sources()
        for line, module in _imports(path)
        for service in SERVICES
        if module.split(".")[0] == service
        and package != service
        and module.split(".")[:2] != [service, "client"]
        # `from lexora_billing import client` yields "lexora_billing" first: the package itself
        and module != service
    ]
    assert not crossings, "\n".join(crossings)


def test_nothing_imports_the_gateway() -> None:
    importers = [
        _where(path, line)
        for package, path in _sources()
        if package != "lexora_gateway"
        for line, module in _imports(path)
        if module.split(".")[0] == "lexora_gateway"
    ]
    assert not importers, importers


@pytest.mark.parametrize("package", PRODUCTION)
def test_production_code_does_not_import_the_local_stack(package: str) -> None:
    importers = [
        _where(path, line)
        for owner, path in _sources()
        if owner == package
        for line, module in _imports(path)
        if module.split(".")[0] == "lexora_dev"
    ]
    assert not importers, importers


def test_the_console_reaches_the_platform_only_through_the_http_api() -> None:
    """The pages are a client of the account API (lexora_console.api_client): no service, client
    or contract is imported, so what a page shows is what the API answers."""
    reaching = [
        f"{_where(path, line)} imports {module}"
        for package, path in _sources()
        if package == "lexora_console"
        for line, module in _imports(path)
        if module.split(".")[0] in (*SERVICES, "lexora_gateway", "lexora_contracts", "lexora_db", "lexora_runtime")
    ]
    assert not reaching, reaching


def test_the_cli_loads_the_local_stack_only_for_lexora_dev() -> None:
    at_import = [
        _where(path, line)
        for path in sorted((REPO / "services" / "lexora_cli").rglob("*.py"))
        for line, module in _imports(path, top_level_only=True)
        if module.split(".")[0] == "lexora_dev"
    ]
    assert not at_import, at_import


def test_no_database_but_postgres() -> None:
    mentions = [
        f"{path.relative_to(REPO)}:{number}"
        for root in (REPO / "services", REPO / "operator")
        for path in _python_files(root)
        for number, text in enumerate(path.read_text().splitlines(), 1)
        if "sqlite" in text.lower()
    ]
    assert not mentions, mentions


def test_the_gateway_top_level_stays_small() -> None:
    """Protocols, admission and shared chat code live in subpackages; at most ten modules remain."""
    modules = sorted(p.name for p in (REPO / "services" / "lexora_gateway").glob("*.py"))
    assert len(modules) <= 10, modules
