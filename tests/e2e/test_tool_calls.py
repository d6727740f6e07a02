"""Tool calling through the OpenAI and Anthropic SDKs, on the real engine.

A 135M model seldom decides to call a tool on its own. The forced tests make it call (the engine's
guided decoding then guarantees a well-formed call to an offered tool) and check the rest of the
round trip: the call's shape, streaming, history with tool results, and billing. The `auto` tests
show it earlier turns in which it called the tool; the grammar then lets it choose between a call
and prose, and the call streams as it is written.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

CITIES = ["Paris", "Rome", "Tokyo"]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": CITIES}},
    "required": ["city"],
}
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER_SCHEMA},
    },
    {"type": "function", "function": {"name": "get_time", "description": "Time now", "parameters": {"type": "object"}}},
]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ANY_ONE = {"type": "any", "disable_parallel_tool_use": True}


def openai_client(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0)


def anthropic_client(lexora: RunningStack, api_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=lexora.base_url.removesuffix("/v1"), api_key=api_key, max_retries=0)


def test_openai_named_function_is_called_with_schema_valid_arguments(lexora: RunningStack) -> None:
    account = lexora.create_account()
    reply = openai_client(lexora, account.api_key).chat.completions.create(
        model=LOCAL_CHAT_MODEL,
        messages=ASK,
        tools=OPENAI_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["city"] in CITIES
    assert reply.usage.completion_tokens > 0
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert row["completion_tokens"] == reply.usage.completion_tokens and row["cost_pico"] > 0


def test_openai_required_calls_one_of_the_tools(lexora: RunningStack) -> None:
    account = lexora.create_account()
    reply = openai_client(lexora, account.api_key).chat.completions.create(
        # Greedy, with room: get_time's open schema lets sampled arguments run long.
        model=LOCAL_CHAT_MODEL,
        messages=ASK,
        tools=OPENAI_TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
    )
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name in ("get_weather", "get_time")
    assert isinstance(json.loads(call.function.arguments), dict)


def test_openai_streams_tool_call_deltas(lexora: RunningStack) -> None:
    account = lexora.create_account()
    chunks = list(
        openai_client(lexora, account.api_key).chat.completions.create(
            model=LOCAL_CHAT_MODEL,
            messages=ASK,
            tools=OPENAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=40,
            stream=True,
        )
    )
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments)["city"] in CITIES
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_openai_tool_results_feed_the_next_turn(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = openai_client(lexora, account.api_key)
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    with_result = sdk.chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=history, tools=OPENAI_TOOLS, tool_choice="none", max_tokens=24
    )
    assert with_result.choices[0].message.content.strip()
    assert with_result.choices[0].finish_reason in ("stop", "length")
    plain = sdk.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=ASK, max_tokens=1)
    assert with_result.usage.prompt_tokens > plain.usage.prompt_tokens, "the call and its result are in the prompt"


def test_openai_unknown_forced_function_is_400(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(lexora, account.api_key).chat.completions.create(
            model=LOCAL_CHAT_MODEL,
            messages=ASK,
            tools=OPENAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
        )
    assert caught.value.body["param"] == "tool_choice"


def test_anthropic_forced_tool_returns_a_tool_use_block(lexora: RunningStack) -> None:
    account = lexora.create_account()
    message = anthropic_client(lexora, account.api_key).messages.create(
        model=LOCAL_CHAT_MODEL,
        max_tokens=40,
        messages=ASK,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert block.input["city"] in CITIES


def test_anthropic_streams_input_json_and_the_sdk_assembles_it(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with anthropic_client(lexora, account.api_key).messages.stream(
        model=LOCAL_CHAT_MODEL, max_tokens=40, messages=ASK, tools=ANTHROPIC_TOOLS, tool_choice=ANY_ONE
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    [block] = final.content
    assert block.type == "tool_use" and block.input["city"] in CITIES
    assert final.stop_reason == "tool_use"


def test_anthropic_tool_round_trip(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = anthropic_client(lexora, account.api_key)
    first = sdk.messages.create(
        model=LOCAL_CHAT_MODEL, max_tokens=40, messages=ASK, tools=ANTHROPIC_TOOLS, tool_choice=ANY_ONE
    )
    [call] = first.content
    second = sdk.messages.create(
        model=LOCAL_CHAT_MODEL,
        max_tokens=24,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "none"},
        messages=[
            *ASK,
            {"role": "assistant", "content": [call.model_dump(include={"type", "id", "name", "input"})]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
        ],
    )
    assert second.content[0].type == "text" and second.content[0].text.strip()
    assert second.stop_reason in ("end_turn", "max_tokens")


def test_anthropic_count_tokens_includes_the_tools(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = anthropic_client(lexora, account.api_key)
    without = sdk.messages.count_tokens(model=LOCAL_CHAT_MODEL, messages=ASK).input_tokens
    with_tools = sdk.messages.count_tokens(model=LOCAL_CHAT_MODEL, messages=ASK, tools=ANTHROPIC_TOOLS).input_tokens
    assert with_tools > without
    message = sdk.messages.create(model=LOCAL_CHAT_MODEL, max_tokens=2, messages=ASK, tools=ANTHROPIC_TOOLS)
    assert message.usage.input_tokens == with_tools


# ---- tool_choice auto: the model chooses, the grammar keeps a call well-formed ----------------------
def few_shot(question: str) -> list[dict]:
    """Two earlier turns in which the assistant called get_weather, then `question`."""
    history: list[dict] = []
    for n, (city, result) in enumerate((("Rome", "25C"), ("Tokyo", "20C"))):
        call = {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
        }
        history += [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{n}", "content": result},
            {"role": "assistant", "content": f"It is {result} in {city}."},
        ]
    return [*history, {"role": "user", "content": question}]


def test_openai_auto_streams_the_call_the_model_chose_as_it_is_written(lexora: RunningStack) -> None:
    account = lexora.create_account()
    chunks = list(
        openai_client(lexora, account.api_key).chat.completions.create(
            model=LOCAL_CHAT_MODEL,
            messages=few_shot("What is the weather in Paris?"),
            tools=OPENAI_TOOLS[:1],
            max_tokens=40,
            temperature=0,
            stream=True,
        )
    )
    pieces = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces and pieces[0].id.startswith("call_") and pieces[0].function.name == "get_weather"
    arguments = [p.function.arguments for p in pieces[1:] if p.function.arguments]
    assert len(arguments) > 1, "the arguments stream as the model writes them, not in one piece"
    assert json.loads("".join(arguments)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_openai_auto_answers_in_prose_when_the_model_does_not_call(lexora: RunningStack) -> None:
    account = lexora.create_account()
    chunks = list(
        openai_client(lexora, account.api_key).chat.completions.create(
            model=LOCAL_CHAT_MODEL,
            messages=few_shot("Write a haiku about the sea."),
            tools=OPENAI_TOOLS[:1],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
    )
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) > 1 and "".join(contents).strip(), "prose streams token by token"
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_anthropic_auto_streams_input_json_as_it_is_written(lexora: RunningStack) -> None:
    account = lexora.create_account()
    openai_history = few_shot("What is the weather in Paris?")
    messages: list[dict] = []
    for turn in openai_history:  # the same history in the Messages API's blocks
        if turn["role"] == "tool":
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": turn["tool_call_id"], "content": turn["content"]}
                    ],
                }
            )
        elif turn.get("tool_calls"):
            call = turn["tool_calls"][0]
            use = {
                "type": "tool_use",
                "id": call["id"],
                "name": "get_weather",
                "input": json.loads(call["function"]["arguments"]),
            }
            messages.append({"role": "assistant", "content": [use]})
        else:
            messages.append({"role": turn["role"], "content": turn["content"]})
    with anthropic_client(lexora, account.api_key).messages.stream(
        model=LOCAL_CHAT_MODEL, max_tokens=40, messages=messages, tools=ANTHROPIC_TOOLS, temperature=0
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    pieces = [
        e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(pieces) > 1
    [block] = final.content
    assert block.type == "tool_use" and block.input == {"city": "Paris"} and final.stop_reason == "tool_use"
