"""The model a client's name means (pure): a registry id, a model's declared alias, else the first
of the platform's name patterns (`LEXORA_MODEL_ALIASES`) that matches, in order.

Coding agents ask for their vendor's names (Claude Code sends `claude-sonnet-4-5-…` or
`claude-3-5-haiku-20241022` for its background calls); a pattern lets an installation serve them
with its own models without every dated name declared as an alias. Patterns are fnmatch-style and
case-sensitive (`*`, `?`, `[…]`), as model ids are."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase

from lexora_contracts.registry import ModelRecord


def pattern_target(name: str, patterns: Mapping[str, str]) -> str | None:
    """The model id the first pattern matching `name` maps it to, in the mapping's order."""
    for pattern, target in patterns.items():
        if fnmatchcase(name, pattern):
            return target
    return None


def resolve(name: str, lookup: Callable[[str], ModelRecord | None], patterns: Mapping[str, str]) -> ModelRecord | None:
    """The record `name` means: `lookup` (the registry's: by id, else by declared alias) first, then
    the first matching pattern's target, looked up the same way. None: no such model."""
    record = lookup(name)
    if record is not None:
        return record
    target = pattern_target(name, patterns)
    return lookup(target) if target is not None else None
