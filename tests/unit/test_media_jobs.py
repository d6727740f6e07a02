"""Embedding and image requests: validation, credit holds, response bodies (pure, no services)."""

import base64
import json

import numpy as np
import pytest
from pydantic import ValidationError

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.money import PICO_PER_MICRO, image_cost_pico
from lexora_contracts.registry import ModelRecord, Pricing
from lexora_gateway.admission.admit import serving_model
from lexora_gateway.http import parse_body
from lexora_gateway.media import embedding_jobs, image_jobs
from lexora_gateway.media.schemas import MAX_EMBEDDING_INPUTS, EmbeddingsRequest, ImageGenerationRequest

EMBEDDER = ModelRecord(
    id="e",
    kind="embedding",
    triton_model="e",
    context_length=256,
    embedding_dimensions=384,
    pricing=Pricing(input_micro_per_mtok=10_000, output_micro_per_mtok=0),
)
PAINTER = ModelRecord(
    id="p",
    kind="image",
    triton_model="p",
    context_length=512,
    pricing=Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0, image_micro=2_000),
)


def embeddings(**kwargs: object) -> EmbeddingsRequest:
    return EmbeddingsRequest.model_validate({"model": "e", "input": "hello", **kwargs})


def image(**kwargs: object) -> ImageGenerationRequest:
    return ImageGenerationRequest.model_validate({"model": "p", "prompt": "a red cube", **kwargs})


# ---- embeddings --------------------------------------------------------------------------------
def test_embedding_input_is_a_string_or_a_list_of_strings() -> None:
    assert embeddings(input="one").texts() == ["one"]
    assert embeddings(input=["one", "two"]).texts() == ["one", "two"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([], "empty list"),
        ("", "empty string"),
        (["ok", ""], "input[1] is an empty string"),
        ([1, 2, 3], "token-id arrays are not supported"),
        ([[1, 2], [3]], "token-id arrays are not supported"),
        (["x"] * (MAX_EMBEDDING_INPUTS + 1), f"at most {MAX_EMBEDDING_INPUTS}"),
    ],
)
def test_bad_embedding_input_is_a_400_naming_input(value: object, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(EmbeddingsRequest, f'{{"model": "e", "input": {_json(value)}}}'.encode())
    assert caught.value.param == "input"
    assert fragment in caught.value.message


def test_encoding_format_is_float_or_base64() -> None:
    with pytest.raises(ValidationError):
        embeddings(encoding_format="int8")


def test_dimensions_may_only_restate_the_native_size() -> None:
    embedding_jobs.check_dimensions(embeddings(dimensions=384), EMBEDDER)
    embedding_jobs.check_dimensions(embeddings(), EMBEDDER)
    with pytest.raises(InvalidRequest) as caught:
        embedding_jobs.check_dimensions(embeddings(dimensions=128), EMBEDDER)
    assert caught.value.param == "dimensions"
    assert "384-dimensional" in caught.value.message


def test_embedding_hold_bounds_the_tokens_from_above_and_caps_at_the_context() -> None:
    texts = ["héllo", "x" * 10_000]
    # "héllo" is 6 bytes + [CLS]/[SEP]; the long one cannot cost more than the context (else refused).
    assert embedding_jobs.embedding_token_bound(texts, 256) == 8 + 256
    held = embedding_jobs.embedding_reservation_micro(texts, EMBEDDER, EMBEDDER.pricing)
    assert held * PICO_PER_MICRO >= (8 + 256) * 10_000
    free = Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0)
    assert embedding_jobs.embedding_reservation_micro(texts, EMBEDDER, free) == 0


def test_embedding_bodies_decode_to_the_same_vectors_in_both_encodings() -> None:
    vectors = np.arange(6, dtype="<f4").reshape(2, 3) / 7
    raw = vectors.tobytes()
    floats = embedding_jobs.embeddings_body("e", raw, 2, "float", 5, 50_000)
    b64 = embedding_jobs.embeddings_body("e", raw, 2, "base64", 5, 50_000)
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert np.allclose(np.array([d["embedding"] for d in floats["data"]], dtype="<f4"), vectors)
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64["data"]]
    assert np.array_equal(np.stack(decoded), vectors)
    assert floats["usage"] == {"prompt_tokens": 5, "total_tokens": 5, "cost": 5e-08}


def test_an_image_model_is_not_an_embedding_model() -> None:
    with pytest.raises(InvalidRequest) as caught:
        serving_model(PAINTER, "p", "embedding")
    assert caught.value.param == "model"
    assert "is an image model, not an embedding model" in caught.value.message


# ---- images ------------------------------------------------------------------------------------
def test_image_defaults_follow_the_contract() -> None:
    body = image()
    assert (body.width, body.height, body.num_inference_steps, body.guidance_scale, body.n) == (768, 768, 4, 0.0, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 255),
        ("width", 2049),
        ("height", 1000),  # not a multiple of 16
        ("num_inference_steps", 0),
        ("num_inference_steps", 51),
        ("guidance_scale", -0.1),
        ("guidance_scale", 20.5),
        ("n", 2),
        ("response_format", "url"),
        ("prompt", ""),
        ("stream", True),
    ],
)
def test_image_parameters_out_of_range_are_400_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(ImageGenerationRequest, f'{{"model": "p", "prompt": "cube", "{field}": {_json(value)}}}'.encode())
    assert caught.value.param == field


def test_openai_size_sets_width_and_height() -> None:
    body = image(size="512x1024")
    assert (body.width, body.height) == (512, 1024)
    assert image(size="auto").width == 768
    assert image(size="512x256", width=512).height == 256


@pytest.mark.parametrize("size", ["big", "100x100", "512x1000", "4096x512"])
def test_bad_size_is_refused(size: str) -> None:
    with pytest.raises(ValidationError):
        image(size=size)


def test_size_disagreeing_with_width_is_refused() -> None:
    with pytest.raises(ValidationError, match="disagrees"):
        image(size="512x512", width=768)


def test_image_hold_covers_one_image_and_the_body_carries_the_png() -> None:
    held = image_jobs.image_reservation_micro(PAINTER.pricing)
    assert held * PICO_PER_MICRO >= image_cost_pico(1, 2_000)
    body = image_jobs.image_body(image(width=256, height=512), b"\x89PNG...", 1700000000, 1, image_cost_pico(1, 2_000))
    assert base64.b64decode(body["data"][0]["b64_json"]) == b"\x89PNG..."
    assert body["size"] == "256x512"
    assert body["usage"] == {"images": 1, "cost": 0.002}


def _json(value: object) -> str:
    return json.dumps(value)
