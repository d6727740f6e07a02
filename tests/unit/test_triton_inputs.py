from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_contracts.registry import Pricing
from lexora_router.triton_engine import build_inputs, to_triton

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
