"""The event loop every Lexora process runs on."""

from __future__ import annotations

import asyncio


def fast_runner() -> asyncio.Runner:
    """An asyncio runner on uvloop when it is installed (uvicorn[standard] brings it), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
