"""What the router sends a Triton chat model, checked against the engine contract that the operator
and model-repo/ declare (lexora_contracts.engine_tensors)."""

from lexora_contracts.engine_tensors import CHAT_INPUTS, REASONING_INPUTS
from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_contracts.registry import Pricing
from lexora_router.triton_engine import ModelInterface, build_inputs, to_triton

REQUEST = GenerationRequest(
    request_id="r",
    account_id="a",
    key_id="k",
    model="m",
    messages=[ChatTurn(role="user", content="hi")],
    max_tokens=8,
    temperature=0.5,
    top_p=1.0,
    stop=["END", "STOP"],
    stream=True,
    deadline=0,
    pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
    reserved_micro=0,
    received_at=0,
)


def test_unbatched_models_get_flat_tensors() -> None:
    shapes = {t.name(): t.shape() for t in to_triton(build_inputs(REQUEST), batched=False)}
    assert shapes["text_input"] == [1] and shapes["max_tokens"] == [1] and shapes["stop_words"] == [2]


def test_batched_models_get_a_leading_batch_dimension() -> None:
    shapes = {t.name(): t.shape() for t in to_triton(build_inputs(REQUEST), batched=True)}
    assert shapes["text_input"] == [1, 1] and shapes["max_tokens"] == [1, 1] and shapes["stop_words"] == [1, 2]


def test_optional_inputs_are_sent_only_when_asked_for() -> None:
    names = {name for name, _, _ in build_inputs(REQUEST)}
    assert "top_k" not in names and "seed" not in names and "guided_decoding_guide" not in names
    assert {"text_input", "apply_chat_template", "max_tokens", "stream", "temperature", "top_p", "stop_words"} <= names


def test_the_engine_streams_only_when_the_client_does() -> None:
    values = {name: value for name, _, value in build_inputs(REQUEST)}
    assert values["stream"].tolist() == [True]
    quiet = {name: value for name, _, value in build_inputs(REQUEST.model_copy(update={"stream": False}))}
    assert quiet["stream"].tolist() == [False]


EVERYTHING = REQUEST.model_copy(
    update={
        "top_k": 5,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.5,
        "seed": 7,
        "guide_type": "json",
        "guide": "{}",
        "reasoning": True,
        "reasoning_budget": 64,
    }
)


def test_every_input_the_router_can_send_is_in_the_engine_contract_with_its_type() -> None:
    contract = {t.name: t.datatype for t in CHAT_INPUTS + REASONING_INPUTS}
    sent = {name: datatype for name, datatype, _ in build_inputs(EVERYTHING)}
    assert sent == contract


def test_every_required_input_of_the_contract_is_always_sent() -> None:
    sent = {name for name, _, _ in build_inputs(REQUEST.model_copy(update={"stop": []}))}
    assert {t.name for t in CHAT_INPUTS if not t.optional} <= sent


def test_the_router_asks_a_model_only_for_the_outputs_it_declares() -> None:
    required = ["text_output", "num_input_tokens", "num_output_tokens", "finish_reason"]
    with_stop_word = {"max_batch_size": 0, "output": [{"name": n} for n in [*required, "stop_word"]]}
    ensemble = {"max_batch_size": 64, "output": [{"name": n} for n in required]}
    assert ModelInterface.from_config(with_stop_word) == ModelInterface(False, (*required, "stop_word"))
    assert ModelInterface.from_config(ensemble) == ModelInterface(True, tuple(required))
