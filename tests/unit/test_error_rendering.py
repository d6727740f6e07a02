import pytest
from pydantic import ValidationError

from lexora_contracts.errors import ErrorInfo, InsufficientCredits, InvalidRequest, ModelUnavailable, error_from_info
from lexora_gateway.errors import invalid_request_from, openai_error_body
from lexora_gateway.openai.schemas import ChatCompletionRequest


def test_errors_survive_the_trip_between_services() -> None:
    original = ModelUnavailable("no instance")
    rebuilt = error_from_info(ErrorInfo.model_validate_json(original.info().model_dump_json()))
    assert type(rebuilt) is ModelUnavailable
    assert rebuilt.retry_after == 30 and rebuilt.status == 503


def test_openai_envelope_shape() -> None:
    assert openai_error_body(InsufficientCredits("add credits")) == {
        "error": {
            "message": "add credits",
            "type": "insufficient_credits",
            "param": None,
            "code": "insufficient_credits",
        }
    }


def test_validation_errors_name_the_field_like_openai() -> None:
    try:
        ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "x", "content": "y"}]})
    except ValidationError as exc:
        error = invalid_request_from(exc)
    assert error.param == "messages[0].role"
    assert "messages[0].role" in error.message


def test_a_refusal_that_weighs_several_fields_names_the_one_to_fix() -> None:
    """Once 'The request body must be a JSON object' (pydantic locates a model validator's error at
    the whole model); found by fuzzing /v1/images/generations."""
    from lexora_gateway.http import parse_body
    from lexora_gateway.media.schemas import ImageGenerationRequest

    for size, says in (("64x64", "must be"), ("512x512", "disagrees with width=768")):
        body = f'{{"model": "m", "prompt": "a cube", "size": "{size}", "width": 768}}'.encode()
        with pytest.raises(InvalidRequest) as refused:
            parse_body(ImageGenerationRequest, body)
        assert refused.value.param == "size" and says in refused.value.message
