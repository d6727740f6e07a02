"""The registry record the operator publishes for a model id (pure: ModelDeployments -> ModelRecord)."""

from __future__ import annotations

import pytest
from operator_support import load_sample

from lexora_contracts.registry import Endpoint
from lexora_operator.registry import Member, model_record
from lexora_operator.spec import InvalidSpec, parse_spec


def _spec(extra: dict | None = None):
    manifest = load_sample("smollm2-cpu.yaml")
    spec = {**manifest["spec"], **(extra or {})}
    return parse_spec(manifest["metadata"]["name"], spec)


def _endpoint(pod: str, deployment: str = "lexora-models/smollm2-135m-instruct") -> Endpoint:
    return Endpoint(name=f"lexora-models/{pod}", grpc_address="10.0.0.1:8001", deployment=deployment)


def test_record_carries_the_declared_aliases() -> None:
    member = Member("smollm2-135m-instruct", "lexora-models", _spec(), endpoints=(_endpoint("p-0"),))
    record = model_record([member])
    assert record.id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert record.aliases == ["smollm2"]
    assert [e.name for e in record.endpoints] == ["lexora-models/p-0"]


def test_record_keeps_aliases_when_not_serving() -> None:
    spec = _spec({"aliases": ["smol", "claude-3-5-haiku-20241022"]})
    record = model_record([Member("smollm2-135m-instruct", "lexora-models", spec)])
    assert record.aliases == ["smol", "claude-3-5-haiku-20241022"]
    assert record.endpoints == []
    assert record.status == "pipeline"


def test_no_aliases_by_default() -> None:
    spec = _spec({"aliases": []})
    assert model_record([Member("m", "ns", spec)]).aliases == []


def test_record_lists_deployments_oldest_first_with_their_weights() -> None:
    canary = Member(
        "canary",
        "lexora-models",
        _spec({"traffic": {"weight": 10}, "model": {**_spec().model.model_dump(by_alias=True), "contextLength": 4096}}),
        created="2026-12-02T00:00:00Z",
        endpoints=(_endpoint("canary-0", "lexora-models/canary"),),
    )
    primary = Member(
        "primary",
        "lexora-models",
        _spec({"traffic": {"weight": 90}}),
        created="2026-12-01T00:00:00Z",
        endpoints=(_endpoint("primary-0", "lexora-models/primary"),),
    )
    record = model_record([canary, primary])
    assert [(d.key, d.weight) for d in record.deployments] == [
        ("lexora-models/primary", 90),
        ("lexora-models/canary", 10),
    ]
    assert [e.name for e in record.endpoints] == ["lexora-models/primary-0", "lexora-models/canary-0"]
    assert record.context_length == 8192  # the oldest's catalog
    assert record.created == 1796083200


def test_scaling_from_zero_makes_the_record_wake_on_request() -> None:
    spec = _spec({"autoscaling": {"provider": "keda", "minReplicas": 0, "maxReplicas": 2}})
    record = model_record([Member("m", "ns", spec)])
    assert record.wakes_on_request and record.deployments[0].scales_from_zero
    assert not model_record([Member("m", "ns", _spec())]).wakes_on_request


def test_a_record_needs_a_deployment() -> None:
    with pytest.raises(ValueError):
        model_record([])


@pytest.mark.parametrize("bad", [[""], "smollm2", [1]])
def test_bad_aliases_are_refused(bad: object) -> None:
    with pytest.raises(InvalidSpec):
        _spec({"aliases": bad})
