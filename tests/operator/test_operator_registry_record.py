"""The registry record the operator publishes for a ModelDeployment (pure: spec -> ModelRecord)."""

from __future__ import annotations

import pytest
from operator_support import load_sample

from lexora_operator.registry import model_record
from lexora_operator.spec import InvalidSpec, parse_spec


def _spec(extra: dict | None = None):
    manifest = load_sample("smollm2-cpu.yaml")
    spec = {**manifest["spec"], **(extra or {})}
    return parse_spec(manifest["metadata"]["name"], spec)


def test_record_carries_the_declared_aliases() -> None:
    record = model_record("smollm2-135m-instruct", "lexora-models", _spec(), serving=True, created=1)
    assert record.id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert record.aliases == ["smollm2"]


def test_record_keeps_aliases_when_not_serving() -> None:
    spec = _spec({"aliases": ["smol", "claude-3-5-haiku-20241022"]})
    record = model_record("smollm2-135m-instruct", "lexora-models", spec, serving=False, created=1)
    assert record.aliases == ["smol", "claude-3-5-haiku-20241022"]
    assert record.endpoints == []


def test_no_aliases_by_default() -> None:
    spec = _spec({"aliases": []})
    assert model_record("m", "ns", spec, serving=True, created=1).aliases == []


@pytest.mark.parametrize("bad", [[""], "smollm2", [1]])
def test_bad_aliases_are_refused(bad: object) -> None:
    with pytest.raises(InvalidSpec):
        _spec({"aliases": bad})
