"""The Responses API's pure pieces: request items to chat turns, tools, reasoning settings, and the
output built with its typed events."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from lexora_contracts.errors import InvalidRequest
from lexora_gateway.http import parse_body
from lexora_gateway.openai import responses_translation as rt
from lexora_gateway.openai.responses_events import ResponseEvents
from lexora_gateway.openai.responses_schemas import ResponsesRequest
from lexora_gateway.openai.responses_store import _valid_key


def request(**fields: Any) -> ResponsesRequest:
    return parse_body(ResponsesRequest, json.dumps({"model": "m", **fields}).encode())


def turns(body: ResponsesRequest) -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in rt.to_job(body).messages]


def test_a_string_input_is_one_user_turn_after_the_instructions() -> None:
    body = request(input="Hello", instructions="Be brief.")
    assert turns(body) == [("system", "Be brief."), ("user", "Hello")]
    job = rt.to_job(body)
    assert job.endpoint == "/v1/responses" and job.temperature == 0.7 and job.max_tokens is None


def test_items_become_turns_calls_joining_their_assistant_turn() -> None:
    body = request(
        input=[
            {"role": "developer", "content": "Use metric units."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "21 C"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ]
    )
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
    assert turns(body) == [
        ("system", "Use metric units."),
        ("user", "Weather?"),
        ("assistant", f"Checking.\n{call}"),
        ("tool", "21 C"),
    ]


def test_history_comes_before_the_new_input() -> None:
    history = rt.items_from_store(
        [
            {"role": "user", "content": "Hi"},
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}],
            },
        ]
    )
    job = rt.to_job(request(input="And you?", instructions="Sys"), history)
    assert [(t.role, t.content) for t in job.messages] == [
        ("system", "Sys"),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "And you?"),
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "input"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[0].arguments"),
        (
            {"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
            "input[0].content[0]",
        ),
        ({"input": "x", "tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]}, "tool_choice"),
        ({"input": "x", "tool_choice": "required", "tools": [{"type": "file_search"}]}, "tool_choice"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
        ({"input": "x", "background": True}, "background"),
    ],
)
def test_refusals_name_the_parameter(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        rt.to_job(request(**fields))
    assert refused.value.param == param


def test_hosted_tools_are_left_out_and_named() -> None:
    body = request(
        input="x",
        tools=[
            {"type": "web_search", "search_context_size": "low"},
            {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": False},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        ],
        tool_choice="auto",
    )
    job = rt.to_job(body)
    assert [t.name for t in job.tools.tools] == ["shell"] and job.tools.mode == "auto"
    assert rt.ignored_tools_header(body) == {"x-lexora-ignored-tools": "web_search, apply_patch"}
    forced = rt.to_job(
        request(input="x", tools=body.model_dump()["tools"][1:2], tool_choice={"type": "function", "name": "shell"})
    )
    assert forced.tools.forced and forced.tools.forced_name == "shell"


@pytest.mark.parametrize(
    ("effort", "enabled", "setting_effort"),
    [("none", False, None), ("minimal", True, "low"), ("medium", True, "medium"), ("xhigh", True, "xhigh")],
)
def test_reasoning_effort_maps_onto_the_reasoning_setting(
    effort: str, enabled: bool, setting_effort: str | None
) -> None:
    setting = rt.reasoning_setting(request(input="x", reasoning={"effort": effort, "summary": "auto"}))
    assert setting is not None and setting.enabled is enabled and setting.effort == setting_effort
    assert rt.reasoning_setting(request(input="x", reasoning={"summary": "auto"})) is None


def test_unknown_fields_and_codex_fields_are_accepted() -> None:
    body = request(
        input="x",
        store=False,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        client_metadata={"a": 1},
        service_tier="auto",
        something_new={"x": 1},
    )
    assert body.store is False and rt.wants_encrypted_reasoning(body)


def _events(summary: bool = False) -> ResponseEvents:
    body = request(input="x")
    skeleton = lambda *args: rt.response_body(body, "resp_1", "m", 0, *args)  # noqa: E731
    counter = itertools.count()
    return ResponseEvents(skeleton, summary=summary, new_id=lambda prefix: f"{prefix}_{next(counter)}")


def parse(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        body = json.loads(data.removeprefix("data: "))
        assert name == f"event: {body['type']}"
        events.append(body)
    return events


def test_a_text_answer_streams_in_order_with_sequence_numbers() -> None:
    events = _events()
    raw = events.start() + events.text("Hel") + events.text("lo")
    raw += events.complete("stop", rt.usage_block(5, 2, 280_000))
    parsed = parse(raw)
    assert [e["type"] for e in parsed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in parsed] == list(range(10))
    final = parsed[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["total_tokens"] == 7 and final["usage"]["output_tokens_details"]["reasoning_tokens"] == 0


def test_reasoning_then_a_call_and_a_length_cut() -> None:
    events = _events(summary=True)
    raw = events.start() + events.reasoning("think") + events.reasoning(" more")
    raw += events.call_opened("call_x", "f") + events.call_arguments('{"a":') + events.call_arguments(" 1}")
    raw += events.close()
    raw += events.complete("length", rt.usage_block(1, 9, 0, 4))
    kinds = [e["type"] for e in parse(raw)]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert events.final is not None
    reasoning, call = events.final["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "think more"}]
    assert call["call_id"] == "call_x" and json.loads(call["arguments"]) == {"a": 1}
    assert events.final["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_empty_answer_is_an_empty_message_and_a_failure_is_response_failed() -> None:
    events = _events()
    events.start()
    events.complete("stop", rt.usage_block(1, 0, 0))
    assert events.final is not None and events.final["output"][0]["content"][0]["text"] == ""
    broken = _events()
    raw = broken.start() + broken.text("par") + broken.fail("engine_error", "The engine failed")
    last = parse(raw)[-1]
    assert last["type"] == "response.failed" and last["response"]["error"]["code"] == "engine_error"


def test_reasoning_tokens_estimated_only_when_the_stream_did_not_tell() -> None:
    assert rt.reasoning_token_count(7, "abc", "d", 10) == 7
    assert rt.reasoning_token_count(None, "abc", "d", 8) == 6
    assert rt.reasoning_token_count(None, "", "d", 8) == 0


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"input": [{"type": "zzz"}]}, "input[0]", "expected one of message, function_call"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]", "input_text"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "'user'"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "Missing"),
    ],
)
def test_unreadable_bodies_name_the_parameter(fields: dict[str, Any], param: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        request(**fields)
    assert refused.value.param == param and says in refused.value.message


def test_stored_response_keys_are_plain_ids() -> None:
    assert _valid_key(rt.new_id("resp"))
    assert not any(_valid_key(key) for key in ("", "resp.*", "resp>", "a b", "x" * 129, "résumé"))
