from pydantic import ValidationError

from lexora_contracts.errors import ErrorInfo, InsufficientCredits, ModelUnavailable, error_from_info
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
