"""Fixtures of the console's browser tests: Debian's chromium, driven by Playwright (no browser is
downloaded; `.ci/run` installs chromium with apt)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from lexora_contracts.registry import Endpoint
from lexora_dev.catalog import LOCAL_CHAT_MODEL, local_catalog
from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.stack import RunningStack, running_stack
from support.stripe_events import STRIPE_TEST_ENV

REPO = Path(__file__).resolve().parents[2]


# Module-scoped, and asked for after `console_stack`: Playwright's sync API keeps an event loop
# running in this thread while it is open, and the stack's helpers (and every other test's
# fixtures) call asyncio.run, which refuses to run inside one. Helpers called from a test go through
# `support.browser.off_the_loop`.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # A missing browser fails the test (never a skip): install it with `apt-get install -y chromium`.
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where page screenshots go: docs/console/ with LEXORA_CONSOLE_SCREENSHOTS=1 (to refresh the
    README's pictures), else the test's own folder."""
    if os.environ.get("LEXORA_CONSOLE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "console"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path


@pytest.fixture(scope="session")
def console_stack(state_root: Path, triton_endpoint: Endpoint, postgres_url: str) -> Iterator[RunningStack]:
    """The platform with the chat model alone in its catalog (the console needs no other, and the
    warm-up of every model is the slowest part of a start), Stripe's test settings included.
    Session-scoped, so it starts before any module's Playwright loop (see above)."""
    catalog = [record for record in local_catalog(triton_endpoint) if record.id == LOCAL_CHAT_MODEL]
    state_dir = state_root / "console"
    with running_stack("console", postgres_url, state_dir, triton_endpoint, catalog, STRIPE_TEST_ENV) as running:
        yield running
