"""Browser tests' helpers: Debian's chromium for Playwright, and a way around Playwright's loop.

Playwright's sync API keeps an event loop running in the test's thread while it is open; the stack's
helpers (RunningStack.balance, .query, ...) call asyncio.run, which refuses to run inside one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def off_the_loop(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` in a worker thread, away from Playwright's event loop. Not for starting
    processes: the local stack's children die with the thread that started them (PDEATHSIG)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call, *args).result()
