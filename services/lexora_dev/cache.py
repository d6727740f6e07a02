"""Where generated artefacts shared by every local Triton live (the tiny FLUX weights): used by
the launcher (triton_server) and by the builder run on its own (flux_weights)."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir(state_dir: Path) -> Path:
    """``$LEXORA_CACHE_DIR``, else ``<repo>/.lexora/cache`` in a source checkout (so test sessions
    with throw-away state dirs reuse them), else ``<state_dir>/cache``."""
    if os.environ.get("LEXORA_CACHE_DIR"):
        return Path(os.environ["LEXORA_CACHE_DIR"]).resolve()
    if (_REPO_ROOT / "model-repo").is_dir():
        return _REPO_ROOT / ".lexora" / "cache"
    return Path(state_dir).resolve() / "cache"
