"""The Anthropic <-> chat-job translation, on transcripts of real requests and event streams."""

import json

import pytest

from lexora_contracts.anthropic import MessagesRequest
from lexora_contracts.errors import InvalidRequest
from lexora_gateway import anthropic_chat as fmt

CLAUDE_CODE_LIKE = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 512,
    "system": [{"type": "text", "text": "You are a coding agent."}, {"type": "text", "text": "Be brief."}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me think", "signature": "x"},
                {"type": "text", "text": "ok"},
            ],
        },
        {"role": "user", "content": "Thanks"},
    ],
    "stop_sequences": ["\n\nHuman:"],
    "metadata": {"user_id": "u1"},
    "stream": True,
}


def test_request_becomes_a_chat_job_with_system_first() -> None:
    job = fmt.to_job(MessagesRequest.model_validate(CLAUDE_CODE_LIKE))
    assert [(t.role, t.content) for t in job.messages] == [
        ("system", "You are a coding agent.\n\nBe brief."),
        ("user", "List the files."),
        ("assistant", "ok"),
        ("user", "Thanks"),
    ]
    assert (job.max_tokens, job.stream, job.stop, job.endpoint) == (512, True, ["\n\nHuman:"], "/v1/messages")
    assert job.temperature == 0.7 and job.top_k is None


def test_sampling_parameters_carry_over() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    job = fmt.to_job(MessagesRequest.model_validate({**body, "temperature": 0.2, "top_p": 0.9, "top_k": 40}))
    assert (job.temperature, job.top_p, job.top_k) == (0.2, 0.9, 40)


PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


def test_image_blocks_are_gathered_in_order_naming_their_fields() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    url_image = {"type": "image", "source": {"type": "url", "url": "https://images.example/y.png"}}
    content = [
        {"type": "text", "text": "Compare"},
        image,
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}, url_image]},
    ]
    job = fmt.to_job(
        MessagesRequest.model_validate(
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
        )
    )
    # In the order the engine reads them: a message's tool results are turns before its own text.
    assert [(t.role, t.content) for t in job.messages] == [("tool", "r"), ("user", "Compare")]
    assert [(p.param, p.offset, p.turn.role if p.turn else None) for p in job.images] == [
        ("messages[0].content[2].content[1].source.url", 1, "tool"),
        ("messages[0].content[1].source.data", 7, "user"),
    ]
    assert job.images[0].url == "https://images.example/y.png" and job.images[1].declared_type == "image/png"


def test_image_blocks_outside_user_messages_are_refused_naming_the_block() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    body = MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [image]}]}
    )
    with pytest.raises(InvalidRequest) as caught:
        fmt.to_job(body)
    assert caught.value.param == "messages[0].content[0]"


TOOLS = [{"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize(
    ("choice", "mode", "forced_name"),
    [
        (None, "auto", None),
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "tool", "name": "get_weather"}, "auto", "get_weather"),
        ({"type": "none"}, "none", None),
    ],
)
def test_tool_choice_maps_onto_the_protocol_free_modes(choice: dict | None, mode: str, forced_name: str | None) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    if choice:
        body["tool_choice"] = choice
    use = fmt.to_job(MessagesRequest.model_validate(body)).tools
    assert (use.mode, use.forced_name) == (mode, forced_name)


def test_tool_history_becomes_calls_and_tool_turns() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                    {"type": "text", "text": "Summarise."},
                ],
            },
        ],
    }
    job = fmt.to_job(MessagesRequest.model_validate(body))
    assert [(t.role, t.content) for t in job.messages] == [
        ("user", "Weather in Paris?"),
        ("assistant", '{"name": "get_weather", "arguments": {"city": "Paris"}}'),
        ("tool", "18C, sunny"),
        ("user", "Summarise."),
    ]
    assert job.engine_messages()[0].role == "system" and "get_weather" in job.engine_messages()[0].content


def test_forcing_an_unknown_tool_is_refused() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    with pytest.raises(InvalidRequest) as caught:
        fmt.to_job(MessagesRequest.model_validate({**body, "tool_choice": {"type": "tool", "name": "nope"}}))
    assert caught.value.param == "tool_choice"


@pytest.mark.parametrize(
    ("engine", "stop", "expected"),
    [("stop", None, "end_turn"), ("stop", "END", "stop_sequence"), ("length", None, "max_tokens")],
)
def test_stop_reasons(engine: str, stop: str | None, expected: str) -> None:
    assert fmt.stop_reason(engine, stop) == expected


def test_message_body_matches_the_documented_shape() -> None:
    body = fmt.message_body("msg_1", "m", "Hi!", "stop", None, fmt.usage_block(25, 150, 7_000_000))
    assert body == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "output_tokens": 150,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cost": 7e-06,
        },
    }


def _parse(stream: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in stream.decode().strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        events.append((name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return events


def test_event_stream_transcript() -> None:
    usage = fmt.usage_block(10, 2, 480_000)
    stream = b"".join(
        [
            fmt.message_start("msg_1", "m", 10),
            fmt.text_block_start(),
            fmt.ping(),
            fmt.text_delta("Hel"),
            fmt.text_delta("lo"),
            fmt.block_stop(),
            fmt.message_delta("stop", "END", usage),
            fmt.message_stop(),
        ]
    )
    events = _parse(stream)
    assert [name for name, _ in events] == [data["type"] for _, data in events]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 10, "output_tokens": 0}
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[3][1] == {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}
    assert events[6][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert events[6][1]["usage"]["output_tokens"] == 2


def test_top_k_beyond_the_engines_int32_is_refused_at_the_edge() -> None:
    """A top_k the engine cannot take once crashed the router's job (fuzz finding): now a 400."""
    from lexora_contracts.anthropic import MessagesRequest
    from lexora_contracts.errors import InvalidRequest
    from lexora_gateway.http import parse_body

    body = b'{"model": "m", "max_tokens": 8, "top_k": 4294967296, "messages": [{"role": "user", "content": "hi"}]}'
    with pytest.raises(InvalidRequest) as caught:
        parse_body(MessagesRequest, body)
    assert caught.value.param == "top_k"
