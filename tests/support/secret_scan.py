"""The secrets a test run made or was given, looked for in every log line the run produced.

A log line that holds an API key, the key pepper, a password or a Stripe secret is a leak whatever
else is right. The scan runs when the session ends (tests/conftest.py) over the session's state
directory (every stack's service logs, tritonserver's) and pytest's temporary directories.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from support.stripe_events import STRIPE_TEST_ENV

# A whole key as auth issues them (lexora_auth.keys: the prefix, then 32 random bytes in base64url).
# Listings show a prefix of it and "…", which this does not match.
API_KEY = re.compile(r"sk-lexora-[A-Za-z0-9_-]{43}")
# Files that hold a secret by design, whose content is then looked for everywhere else.
SECRET_FILES = ("key-pepper",)

_remembered: dict[str, str] = {
    "Stripe secret key": STRIPE_TEST_ENV["LEXORA_STRIPE_SECRET_KEY"],
    "Stripe webhook secret": STRIPE_TEST_ENV["LEXORA_STRIPE_WEBHOOK_SECRET"],
}


def remember(what: str, value: str) -> None:
    """A secret a test made (a password it signed up with): the scan looks for it too."""
    if len(value) >= 8:  # shorter values would match by chance
        _remembered[f"{what} ({len(_remembered)})"] = value


def _known(roots: Iterable[Path]) -> dict[str, str]:
    known = dict(_remembered)
    for root in roots:
        for name in SECRET_FILES:
            for path in root.rglob(name):
                known[f"{name} of {path.parent.name}"] = path.read_text().strip()
    return known


def leaks(roots: Iterable[Path]) -> list[str]:
    """`file:line: what` for each log line holding a secret (the secret itself is never repeated)."""
    roots = [root for root in roots if root.exists()]
    known = _known(roots)
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.log")):
            if not path.is_file():
                continue
            with path.open(errors="replace") as lines:
                for number, line in enumerate(lines, 1):
                    what = [name for name, value in known.items() if value in line]
                    if API_KEY.search(line):
                        what.append("an API key")
                    if what:
                        found.append(f"{path}:{number}: {', '.join(what)}")
    return found
