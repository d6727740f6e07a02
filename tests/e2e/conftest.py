"""Fixtures shared by the end-to-end tests that drive one component against a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lexora_billing.ledger import Ledger
from lexora_runtime.db import create_engine, migrate
from support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database at the latest migration, on SQLite and on Postgres."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'lexora.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_url"), "t")
    migrate(url)
    return url


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """Billing's ledger on `database_url`, opened as the billing service opens it."""
    engine = create_engine(database_url)
    ledger = Ledger(engine, database_url)
    await ledger.open()
    try:
        yield ledger
    finally:
        await ledger.close()
        await engine.dispose()
