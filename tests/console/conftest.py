"""Fixtures of the console's browser tests: Debian's chromium, driven by Playwright (no browser is
downloaded; `.ci/run` installs chromium with apt)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
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
    import os

    if os.environ.get("LEXORA_CONSOLE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "console"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path
