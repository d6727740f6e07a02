"""The Anthropic <-> chat-job translation, on transcripts of real requests and event streams."""

import json

import pytest

from lexora_contracts.errors import InvalidRequest
from lexora_gateway.anthropic import translation as fmt
from lexora_gateway.anthropic.schemas import MessagesRequest
from lexora_gateway.http import parse_body

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
            fmt.event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            fmt.ping(),
            fmt.event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            fmt.event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            fmt.event("content_block_stop", {"index": 0}),
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
    from lexora_contracts.errors import InvalidRequest
    from lexora_gateway.anthropic.schemas import MessagesRequest
    from lexora_gateway.http import parse_body

    body = b'{"model": "m", "max_tokens": 8, "top_k": 4294967296, "messages": [{"role": "user", "content": "hi"}]}'
    with pytest.raises(InvalidRequest) as caught:
        parse_body(MessagesRequest, body)
    assert caught.value.param == "top_k"


# ---- the Messages API as Anthropic serves it today (Claude Code 2.1.x) -------------------------
CLAUDE_CODE_TOOL_NAMES = ["Task", "Bash", "Glob", "Grep", "LS", "Read", "Edit", "MultiEdit", "Write"]
CLAUDE_CODE_TOOL_NAMES += ["NotebookEdit", "TodoWrite", "WebFetch"]
CLAUDE_CODE_FIRST_REQUEST = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Work in /repo.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": "Fix the failing test.", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {"role": "system", "content": "The user is on branch main."},
    ],
    "tools": [
        *(
            {
                "name": name,
                "description": f"The {name} tool.",
                "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
            }
            for name in CLAUDE_CODE_TOOL_NAMES
        ),
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "thinking": {"type": "adaptive", "display": "omitted"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": json.dumps({"device_id": "d1", "account_uuid": "", "session_id": "s1"})},
}


def test_claude_codes_first_request_becomes_a_chat_job() -> None:
    """The request that once got `400 Invalid value for 'thinking.type'`, parsed as the route does."""
    from lexora_gateway.http import parse_body

    body = parse_body(MessagesRequest, json.dumps(CLAUDE_CODE_FIRST_REQUEST).encode())
    job = fmt.to_job(body)
    assert [(t.role, t.content) for t in job.messages] == [
        ("system", "You are Claude Code.\n\nWork in /repo."),
        ("user", "<system-reminder>context</system-reminder>\nFix the failing test."),
        ("system", "The user is on branch main."),  # a system turn where the client put it
    ]
    assert [t.name for t in job.tools.tools] == CLAUDE_CODE_TOOL_NAMES, "web_search is not offered to the model"
    assert (job.tools.mode, job.stream, job.max_tokens) == ("auto", True, 32000)
    assert job.reasoning is not None and (job.reasoning.enabled, job.reasoning.exclude) == (True, True)
    assert job.reasoning.budget(32000) == 25600  # high: 80%
    assert fmt.ignored_tools_header(body) == {"x-lexora-ignored-tools": "web_search"}
    engine_turns = job.engine_messages()
    assert "web_search" not in engine_turns[0].content and '"name": "Bash"' in engine_turns[0].content
    assert engine_turns[-1].role == "system"


def test_claude_codes_count_tokens_request_is_accepted_too() -> None:
    from lexora_gateway.anthropic.schemas import CountTokensRequest
    from lexora_gateway.http import parse_body

    counted = {k: v for k, v in CLAUDE_CODE_FIRST_REQUEST.items() if k not in ("max_tokens", "stream")}
    body = parse_body(CountTokensRequest, json.dumps(counted).encode())
    turns = fmt.count_turns(body, [])
    assert [t.role for t in turns] == ["system", "user", "system"] and "web_search" not in turns[0].content
    assert fmt.ignored_tools_header(body) == {"x-lexora-ignored-tools": "web_search"}


HOSTED_TOOLS = [
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    {"type": "code_execution_20250825", "name": "code_execution"},
    {"type": "bash_20250124", "name": "bash"},
    {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
]


def test_server_tools_are_left_out_and_named_in_a_header() -> None:
    body = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [*HOSTED_TOOLS, {**TOOLS[0], "type": "custom", "cache_control": {"type": "ephemeral"}}],
        }
    )
    assert [t.name for t in fmt.to_job(body).tools.tools] == ["get_weather"]
    assert fmt.ignored_tools_header(body) == {
        "x-lexora-ignored-tools": "web_search, code_execution, bash, str_replace_based_edit_tool"
    }


def test_only_server_tools_means_no_tools_and_no_tool_instructions() -> None:
    body = MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": HOSTED_TOOLS[:1]}
    )
    job = fmt.to_job(body)
    assert not job.tools.active and [t.role for t in job.engine_messages()] == ["user"]


def test_a_request_without_server_tools_gets_no_ignored_tools_header() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    assert fmt.ignored_tools_header(MessagesRequest.model_validate(body)) == {}


def test_forcing_a_server_tool_is_refused_naming_it() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [*TOOLS, HOSTED_TOOLS[0]],
        "tool_choice": {"type": "tool", "name": "web_search"},
    }
    with pytest.raises(InvalidRequest) as caught:
        fmt.to_job(MessagesRequest.model_validate(body))
    assert caught.value.param == "tool_choice.name" and "'web_search'" in caught.value.message
    assert caught.value.status == 400


def test_requiring_a_call_when_only_server_tools_are_given_is_refused_naming_them() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tools": HOSTED_TOOLS[:1],
        "tool_choice": {"type": "any"},
    }
    with pytest.raises(InvalidRequest) as caught:
        fmt.to_job(MessagesRequest.model_validate(body))
    assert caught.value.param == "tool_choice" and "web_search" in caught.value.message


@pytest.mark.parametrize("tool", [{"name": "get_weather"}, {"type": "custom", "name": "get_weather"}])
def test_a_client_tool_without_input_schema_is_refused(tool: dict) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [tool]}
    with pytest.raises(InvalidRequest) as caught:
        fmt.to_job(parse_body(MessagesRequest, json.dumps(body).encode()))
    assert caught.value.param is not None and caught.value.param.startswith("tools[0]")


@pytest.mark.parametrize(
    "extra",
    [
        {"metadata": "a string"},
        {"metadata": {"user_id": {"nested": [1, 2]}}},
        {"context_management": {"edits": [{"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens"}}]}},
        {"container": "c1", "mcp_servers": [], "service_tier": "auto", "a_field_from_next_year": {"x": 1}},
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
    ],
)
def test_fields_we_cannot_honour_are_accepted_and_ignored(extra: dict) -> None:
    from lexora_gateway.http import parse_body

    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **extra}
    job = fmt.to_job(parse_body(MessagesRequest, json.dumps(body).encode()))
    assert [(t.role, t.content) for t in job.messages] == [("user", "x")]


def test_thinking_blocks_sent_back_with_omitted_text_are_not_fed_to_the_model() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "ok"},
                ],
            },
            {"role": "user", "content": "y"},
        ],
    }
    job = fmt.to_job(MessagesRequest.model_validate(body))
    assert [(t.role, t.content) for t in job.messages] == [("user", "x"), ("assistant", "ok"), ("user", "y")]


def test_the_ignored_tools_header_is_latin_1_whatever_the_tool_names() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}, {"type": "x_1", "name": "búsqueda🔎"}],
    }
    [value] = fmt.ignored_tools_header(MessagesRequest.model_validate(body)).values()
    assert value == "web_search, b%C3%BAsqueda%F0%9F%94%8E"
    value.encode("latin-1")
