"""Fixtures shared by the end-to-end tests that drive one component against a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from lexora_billing.ledger import Ledger
from lexora_db.engine import create_engine, migrate
from support.postgres import fresh_database


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A new database at the latest migration."""
    url = fresh_database(postgres_url, "t")
    migrate(url)
    return url


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """Billing's ledger on `database_url`, opened as the billing service opens it."""
    engine = create_engine(database_url)
    ledger = Ledger(engine)
    await ledger.open()
    try:
        yield ledger
    finally:
        await ledger.close()
        await engine.dispose()
