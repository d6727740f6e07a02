"""The gateway's side of waking a model from zero (lexora_gateway.admission.admit.serving_model): a
model with no replica up is refused at once, unless a deployment of it scales from zero, in which
case the job goes on to a router, which holds it while the model wakes."""

from __future__ import annotations

import pytest

from lexora_contracts.errors import ModelUnavailable
from lexora_contracts.registry import DeploymentRef, Endpoint, ModelRecord, Pricing
from lexora_gateway.admission.admit import serving_model

AT_ZERO = ModelRecord(
    id="org/model",
    triton_model="model",
    context_length=1024,
    pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
    deployments=[
        DeploymentRef(namespace="models", name="always-on"),
        DeploymentRef(namespace="models", name="sleepy", scales_from_zero=True),
    ],
)
NOT_WAKING = AT_ZERO.model_copy(update={"deployments": [DeploymentRef(namespace="models", name="always-on")]})
FAILING = AT_ZERO.model_copy(
    update={"endpoints": [Endpoint(name="models/p-0", grpc_address="10.0.0.1:8001", healthy=False)]}
)


def test_a_model_at_zero_that_wakes_on_request_goes_on_to_a_router() -> None:
    assert AT_ZERO.wakes_on_request
    assert serving_model(AT_ZERO, AT_ZERO.id, "chat") is AT_ZERO


def test_a_model_at_zero_that_does_not_wake_is_refused_at_once() -> None:
    with pytest.raises(ModelUnavailable, match="No ready instance") as caught:
        serving_model(NOT_WAKING, NOT_WAKING.id, "chat")
    assert caught.value.retry_after == 30


def test_a_model_whose_replicas_are_up_but_failing_is_refused_even_if_it_wakes() -> None:
    with pytest.raises(ModelUnavailable, match="its engine is failing"):
        serving_model(FAILING, FAILING.id, "chat")
