"""The HTTP generate extension's wire format, built and read without a server."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from lexora_router.triton_http import (
    HttpEngineError,
    event_values,
    first_value,
    generate_body,
    refusal_error,
    response_values,
)


def test_each_tensor_is_a_json_value_under_its_name_a_list_only_for_several_elements() -> None:
    body = orjson.loads(
        generate_body(
            [
                ("text_input", "BYTES", np.array(["héllo ☃".encode()], dtype=np.object_)),
                ("apply_chat_template", "BOOL", np.array([True])),
                ("max_tokens", "INT32", np.array([16], dtype=np.int32)),
                ("seed", "UINT64", np.array([2**64 - 1], dtype=np.uint64)),
                ("temperature", "FP32", np.array([0.5], dtype=np.float32)),
                ("stop_words", "BYTES", np.array([b"\n", b"END"], dtype=np.object_)),
            ]
        )
    )
    assert body == {
        "text_input": "héllo ☃",
        "apply_chat_template": True,
        "max_tokens": 16,
        "seed": 2**64 - 1,
        "temperature": 0.5,
        "stop_words": ["\n", "END"],
    }


def test_an_event_line_gives_its_outputs_and_other_lines_nothing() -> None:
    line = b'data: {"text_output":"Hi","num_output_tokens":1,"finish_reason":""}\n'
    assert event_values(line) == {"text_output": "Hi", "num_output_tokens": 1, "finish_reason": ""}
    assert event_values(b"\n") is None
    assert event_values(b": keep-alive\n") is None


def test_an_error_event_is_the_requests_error() -> None:
    with pytest.raises(HttpEngineError, match="max_tokens must be") as caught:
        event_values(b'data: {"error":"max_tokens must be >= 0"}\n')
    assert not caught.value.unreachable


def test_a_batched_models_output_may_be_a_list() -> None:
    assert first_value({"text_output": ["a", "b"]}, "text_output") == "a"
    assert first_value({"num_output_tokens": [[3]]}, "num_output_tokens") == 3
    assert first_value({}, "stop_word") is None


@pytest.mark.parametrize(
    ("status", "body", "unreachable"),
    [
        (404, b'{"error":"Request for unknown model: \'x\' is not found"}', True),
        (503, b'{"error":"model is not ready"}', True),
        (400, b'data: {"error":"guided_decoding_guide is not a usable json_schema"}\n', False),
        (500, b"", False),
    ],
)
def test_a_refused_request_says_whether_another_endpoint_may_try(status: int, body: bytes, unreachable: bool) -> None:
    refusal = refusal_error(status, body)
    assert refusal.unreachable is unreachable
    assert str(refusal)  # never an empty message


@pytest.mark.parametrize("line", [b"data: {not json\n", b"data: [1, 2]\n"])
def test_an_event_that_is_not_an_object_is_an_error_of_the_engine(line: bytes) -> None:
    with pytest.raises(HttpEngineError, match="unexpected event") as caught:
        event_values(line)
    assert not caught.value.unreachable


def test_a_generate_answer_gives_its_outputs_or_the_error_it_carries() -> None:
    """`generate` answers with one JSON object: the same outputs an SSE event carries."""
    assert response_values(b'{"model_name":"m","text_output":"hi","num_output_tokens":1}')["text_output"] == "hi"
    with pytest.raises(HttpEngineError, match="max_tokens must be") as refused:
        response_values(b'{"error":"max_tokens must be at least 0"}')
    assert not refused.value.unreachable
    with pytest.raises(HttpEngineError, match="unexpected answer") as garbled:
        response_values(b"<html>bad gateway</html>")
    assert garbled.value.status == 502
