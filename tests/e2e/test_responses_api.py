"""The OpenAI Responses API (`/v1/responses`) through the real openai SDK, on the whole platform:
answers, items, streaming events, function calls, stored responses, hosted tools, reasoning,
billing, and a request shaped as Codex CLI sends it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from lexora_contracts.money import pico_to_usd, request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_THINKING_MODEL
from support.stack import RunningStack

PRICE = 40_000  # micro-USD per 1M tokens, input and output, for the local models
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def client(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0)


def post(lexora: RunningStack, api_key: str, body: dict[str, Any], path: str = "/responses") -> httpx.Response:
    return httpx.post(f"{lexora.base_url}{path}", headers={"Authorization": f"Bearer {api_key}"}, json=body, timeout=60)


def test_string_input_is_answered_charged_and_recorded(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=1_000_000)
    before = lexora.balance(account.account_id)
    response = client(lexora, account.api_key).responses.create(
        model=LOCAL_CHAT_MODEL, input="Say hello in one short sentence.", max_output_tokens=16, temperature=0
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    assert response.model == LOCAL_CHAT_MODEL
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text.strip()
    usage = response.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 16
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    cost = request_cost_pico(usage.input_tokens, usage.output_tokens, PRICE, PRICE)
    assert usage.model_extra["cost"] == pytest.approx(pico_to_usd(cost), rel=1e-12)

    after = lexora.settled_balance(account.account_id)
    assert after.held_micro == 0
    assert before.exact_balance_pico - after.exact_balance_pico == cost
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert row["request_id"] == response.id and row["endpoint"] == "/v1/responses"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_pico"]) == (
        usage.input_tokens,
        usage.output_tokens,
        cost,
    )


def test_items_and_instructions_reach_the_model(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    short = sdk.responses.create(model=LOCAL_CHAT_MODEL, input="Hi", max_output_tokens=4, temperature=0, store=False)
    response = sdk.responses.create(
        model=LOCAL_CHAT_MODEL,
        instructions="You are a terse assistant. Answer in one word.",
        input=[
            {"role": "developer", "content": "Prefer French."},
            {"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Blue."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"role": "user", "content": "Another one?"},
        ],
        max_output_tokens=8,
        temperature=0,
    )
    assert response.output_text.strip()
    assert response.instructions == "You are a terse assistant. Answer in one word."
    # Instructions and four turns are more prompt than a bare "Hi".
    assert response.usage.input_tokens > short.usage.input_tokens + 20


def test_streaming_events_parse_and_match_the_accounting(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    args: dict[str, Any] = {"model": LOCAL_CHAT_MODEL, "input": "Count from one to ten in words.", "temperature": 0}
    whole = sdk.responses.create(**args, max_output_tokens=20)
    events = list(sdk.responses.create(**args, max_output_tokens=20, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 3
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        kinds[-1],
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.model_extra["cost"] == whole.usage.model_extra["cost"]

    # The SDK's helper too; an answer cut at max_output_tokens ends with response.incomplete (as
    # OpenAI's does), after which the helper has no "final" response: the last event carries it.
    with sdk.responses.stream(**args, max_output_tokens=20) as stream:
        helped = list(stream)
    texts = [event.delta for event in helped if event.type == "response.output_text.delta"]
    assert helped[-1].type == kinds[-1]
    assert "".join(texts) == helped[-1].response.output_text == whole.output_text


def test_forced_function_call_round_trip_with_previous_response_id(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    first = sdk.responses.create(
        model=LOCAL_CHAT_MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=40,
        temperature=0,
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert json.loads(call.arguments)["city"] in ("Paris", "Rome")

    second = sdk.responses.create(
        model=LOCAL_CHAT_MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 21}'}],
        tools=[WEATHER],
        max_output_tokens=24,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    assert second.output[-1].type in ("message", "function_call")
    # The whole conversation was sent again: more prompt than the first request's.
    assert second.usage.input_tokens > first.usage.input_tokens
    listed = httpx.get(
        f"{lexora.base_url}/responses/{second.id}/input_items",
        headers={"Authorization": f"Bearer {account.api_key}"},
    ).json()
    assert [item["type"] for item in listed["data"]] == ["message", "function_call", "function_call_output"]


def test_streamed_function_call_events(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with client(lexora, account.api_key).responses.stream(
        model=LOCAL_CHAT_MODEL,
        input="Weather in Rome?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=40,
        temperature=0,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments)["city"] in ("Paris", "Rome")


def test_store_false_keeps_nothing_and_stored_ones_are_the_accounts_own(lexora: RunningStack) -> None:
    owner, other = lexora.create_account(), lexora.create_account()
    sdk, stranger = client(lexora, owner.api_key), client(lexora, other.api_key)
    args: dict[str, Any] = {"model": LOCAL_CHAT_MODEL, "input": "Hello", "max_output_tokens": 4}
    unkept = sdk.responses.create(**args, store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unkept.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(**args, previous_response_id=unkept.id)

    kept = sdk.responses.create(**args)
    assert sdk.responses.retrieve(kept.id).output_text == kept.output_text
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError) as refused:
        stranger.responses.create(**args, previous_response_id=kept.id)
    assert refused.value.body["param"] == "previous_response_id"

    sdk.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(kept.id)
    api_v1 = httpx.get(
        lexora.base_url.replace("/v1", "/api/v1") + f"/responses/{kept.id}",
        headers={"x-api-key": owner.api_key},
    )
    assert api_v1.status_code == 404 and api_v1.json()["error"]["code"] == "not_found"


def test_hosted_web_search_is_ignored_and_named_and_forcing_it_is_refused(lexora: RunningStack) -> None:
    account = lexora.create_account()
    body: dict[str, Any] = {
        "model": LOCAL_CHAT_MODEL,
        "input": "Hello",
        "max_output_tokens": 4,
        "tools": [{"type": "web_search"}, WEATHER],
    }
    answered = post(lexora, account.api_key, body)
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-lexora-ignored-tools"] == "web_search"
    forced = post(lexora, account.api_key, {**body, "tool_choice": {"type": "web_search"}})
    assert forced.status_code == 400
    error = forced.json()["error"]
    assert error["param"] == "tool_choice" and "web_search" in error["message"]


def test_errors_use_the_openai_envelope(lexora: RunningStack) -> None:
    account = lexora.create_account()
    unknown = post(lexora, account.api_key, {"model": "no/such-model", "input": "Hi"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    bad = post(lexora, account.api_key, {"model": LOCAL_CHAT_MODEL, "input": [{"role": "robot", "content": "x"}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].role"
    empty = post(lexora, account.api_key, {"model": LOCAL_CHAT_MODEL})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
    arguments = post(
        lexora,
        account.api_key,
        {
            "model": LOCAL_CHAT_MODEL,
            "input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "not json"}],
        },
    )
    assert arguments.status_code == 400 and arguments.json()["error"]["param"] == "input[0].arguments"


def test_reasoning_model_answers_with_a_reasoning_item(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    args: dict[str, Any] = {
        "model": LOCAL_THINKING_MODEL,
        "input": "Hello! How are you today?",
        "max_output_tokens": 40,
        "temperature": 0,
        "reasoning": {"effort": "low", "summary": "auto"},
    }
    response = sdk.responses.create(**args)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.summary and reasoning.summary[0].text.strip()
    assert "think>" not in response.output_text
    assert 0 < response.usage.output_tokens_details.reasoning_tokens <= response.usage.output_tokens

    with sdk.responses.stream(**args) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    final = events[-1].response  # response.completed, or response.incomplete at max_output_tokens
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds.index("response.reasoning_summary_text.delta") < kinds.index("response.output_text.delta")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == reasoning.summary[0].text
    assert final.usage.output_tokens == response.usage.output_tokens


CODEX_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "shell",
        "description": "Runs a shell command and returns its output.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "array", "items": {"type": "string"}},
                "workdir": {"type": "string"},
                "timeout_ms": {"type": "number"},
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    },
    {
        "type": "function",
        "name": "update_plan",
        "description": "Updates the task plan.",
        "strict": False,
        "parameters": {"type": "object", "properties": {"plan": {"type": "array", "items": {"type": "object"}}}},
    },
    {"type": "web_search"},
]


def test_a_codex_shaped_request_streams_to_completion(lexora: RunningStack) -> None:
    account = lexora.create_account()
    body = {
        "model": LOCAL_CHAT_MODEL,
        "instructions": "You are Codex, a coding agent. Be brief.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "<environment_context>cwd: /tmp</environment_context>"}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]},
        ],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a3c4-session",
        "client_metadata": {"originator": "codex_exec"},
        "text": {"verbosity": "low"},
        "max_output_tokens": 32,
    }
    with httpx.stream(
        "POST",
        f"{lexora.base_url}/responses",
        headers={"Authorization": f"Bearer {account.api_key}", "originator": "codex_exec"},
        json=body,
        timeout=60,
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["x-lexora-ignored-tools"] == "web_search"
        lines = list(reply.iter_lines())
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == [event["type"] for event in data]
    assert names[0] == "response.created" and names[-1] in ("response.completed", "response.incomplete")
    final = data[-1]["response"]
    assert final["store"] is False and final["usage"]["output_tokens"] > 0
    assert final["output"] and final["output"][-1]["type"] in ("message", "function_call")
