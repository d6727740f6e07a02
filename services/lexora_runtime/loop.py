"""The event loop every Lexora process runs on."""

from __future__ import annotations

import asyncio
import gc


def fast_runner() -> asyncio.Runner:
    """An asyncio runner on uvloop when it is installed (uvicorn[standard] brings it), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def freeze_startup_heap() -> None:
    """Take what a process allocated while starting (its modules, models, clients) out of the
    garbage collector's reach. A full collection walks every tracked object, and a started
    service holds well over 100,000 of them, which took tens of milliseconds a collection here
    (requests that arrive meanwhile wait). They live as long as the process, so there is
    nothing to find among them; later collections walk only what was allocated since."""
    gc.collect()
    gc.freeze()
