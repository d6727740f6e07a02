"""The model a client's name means: id, declared alias, then the platform's patterns in order."""

from __future__ import annotations

from lexora_contracts.registry import ModelRecord, Pricing
from lexora_gateway.admission.model_names import pattern_target, resolve

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LLAMA = "meta-llama/Llama-3.2-3B-Instruct"
PATTERNS = {"claude-*-haiku-*": SMOL, "claude-*": LLAMA, "gpt-5*": SMOL}


def _record(model_id: str, aliases: list[str]) -> ModelRecord:
    return ModelRecord(
        id=model_id,
        kind="chat",
        owned_by="x",
        triton_model="m",
        context_length=8192,
        pricing=Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0),
        aliases=aliases,
    )


REGISTRY = {SMOL: _record(SMOL, ["smollm2"]), LLAMA: _record(LLAMA, ["claude-opus-4-1"])}


def lookup(name: str) -> ModelRecord | None:
    return REGISTRY.get(name) or next((m for m in REGISTRY.values() if name in m.aliases), None)


def test_first_matching_pattern_wins_in_order() -> None:
    assert pattern_target("claude-3-5-haiku-20241022", PATTERNS) == SMOL
    assert pattern_target("claude-sonnet-4-5-20250929", PATTERNS) == LLAMA
    assert pattern_target("gpt-5-codex", PATTERNS) == SMOL
    assert pattern_target("gpt-4o", PATTERNS) is None


def test_patterns_are_case_sensitive_and_whole_name() -> None:
    assert pattern_target("Claude-3-5-haiku-x", PATTERNS) is None
    assert pattern_target("my-claude-x", PATTERNS) is None


def test_ids_and_declared_aliases_win_over_patterns() -> None:
    assert resolve(SMOL, lookup, PATTERNS).id == SMOL
    assert resolve("smollm2", lookup, PATTERNS).id == SMOL
    # "claude-opus-4-1" matches the "claude-*" pattern, but LLAMA declares it: the declaration wins.
    assert resolve("claude-opus-4-1", lookup, {"claude-*": SMOL}).id == LLAMA


def test_a_pattern_resolves_to_its_targets_record() -> None:
    assert resolve("claude-3-5-haiku-20241022", lookup, PATTERNS).id == SMOL
    assert resolve("claude-sonnet-4-5", lookup, PATTERNS).id == LLAMA


def test_a_pattern_may_target_an_alias() -> None:
    assert resolve("claude-3-5-haiku-1", lookup, {"claude-*": "smollm2"}).id == SMOL


def test_unknown_names_and_missing_targets_are_none() -> None:
    assert resolve("gpt-4o", lookup, PATTERNS) is None
    assert resolve("claude-x", lookup, {"claude-*": "nobody/nothing"}) is None
    assert resolve("claude-x", lookup, {}) is None
