"""Tool calls in each protocol's answer, streamed as they are generated and whole, read back with the
official SDKs' own models and stream accumulators. The engine's tokens are scripted: a 135M model
seldom makes parallel calls on its own (tests/e2e/test_tool_calls.py runs the real one)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as OpenAIResponse

from lexora_gateway.anthropic import message_answers
from lexora_gateway.anthropic import translation as anthropic_translation
from lexora_gateway.anthropic.schemas import MessagesRequest
from lexora_gateway.openai import chat_answers, responses
from lexora_gateway.openai import responses_translation as rt
from lexora_gateway.openai import translation as openai_translation
from lexora_gateway.openai.responses_events import ResponseEvents
from lexora_gateway.openai.responses_schemas import ResponsesRequest
from lexora_gateway.openai.schemas import ChatCompletionRequest
from support.answer_streams import PLAIN, THINKER, body_of, run_of, sse_data

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
ANTHROPIC_TOOLS = [
    {"name": "get_weather", "input_schema": WEATHER},
    {"name": "get_time", "input_schema": {"type": "object"}},
]
# Two parallel calls as a model writes them, a few characters per token.
CALLS = '[{"name": "get_weather", "arguments": {"city": "Par\\"is"}}, {"name": "get_time", "arguments": {}}]'
CALL_TOKENS = [CALLS[i : i + 5] for i in range(0, len(CALLS), 5)]
THINKING_THEN_CALLS = ["<think>", "Need weather.", "</think>", *CALL_TOKENS]
EXPECTED = [("get_weather", {"city": 'Par"is'}), ("get_time", {})]


def openai_job(stream: bool) -> Any:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": OPENAI_TOOLS, "stream": stream}
    return openai_translation.to_job(ChatCompletionRequest.model_validate(body))


def anthropic_job(stream: bool) -> Any:
    body = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "tools": ANTHROPIC_TOOLS}
    return anthropic_translation.to_job(MessagesRequest.model_validate({**body, "stream": stream}))


@pytest.mark.parametrize("tokens", [CALL_TOKENS, THINKING_THEN_CALLS])
async def test_openai_streams_parallel_calls_piece_by_piece(tokens: list[str]) -> None:
    job = openai_job(stream=True)
    stream, first = run_of(job, tokens, THINKER if tokens is THINKING_THEN_CALLS else PLAIN)
    events = sse_data(await body_of(await chat_answers.respond(stream, first, job, False, {})))
    assert events[-1] == "[DONE]" and stream.released
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    pieces = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len([p for p in pieces if p.id]) == 2, "each call opens once, with its id and name"
    assert len([p for p in pieces if p.function.arguments]) > 4, "the arguments arrive in pieces"
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    message = state.get_final_completion().choices[0]
    assert message.finish_reason == "tool_calls"
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.message.tool_calls]
    assert calls == EXPECTED


async def test_openai_whole_answer_has_every_call() -> None:
    job = openai_job(stream=False)
    completion = ChatCompletion.model_validate_json(
        await body_of(await chat_answers.respond(*run_of(job, CALL_TOKENS, PLAIN), job, False, {}))
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == EXPECTED
    assert len({c.id for c in choice.message.tool_calls}) == 2


async def test_openai_prose_with_tools_offered_streams_as_content() -> None:
    job = openai_job(stream=True)
    stream, first = run_of(job, ["It", " is", " sunny."], PLAIN)
    events = sse_data(await body_of(await chat_answers.respond(stream, first, job, False, {})))
    deltas = [ChatCompletionChunk.model_validate(e).choices[0].delta for e in events[:-1]]
    assert [d.content for d in deltas if d.content] == ["It", " is", " sunny."], "streamed, not held back"
    assert ChatCompletionChunk.model_validate(events[-2]).choices[0].finish_reason == "stop"


@pytest.mark.parametrize("tokens", [CALL_TOKENS, THINKING_THEN_CALLS])
async def test_anthropic_streams_tool_use_blocks_with_input_json_deltas(tokens: list[str]) -> None:
    reasoning = tokens is THINKING_THEN_CALLS
    whole_job = anthropic_job(stream=False)
    whole = Message.model_validate_json(
        await body_of(
            await message_answers.respond(
                *run_of(whole_job, tokens, THINKER if reasoning else PLAIN), whole_job, "m", {}
            )
        )
    )
    job = anthropic_job(stream=True)
    stream, first = run_of(job, tokens, THINKER if reasoning else PLAIN)
    raw = await body_of(await message_answers.respond(stream, first, job, "m", {}))
    snapshot, deltas, json_bufs = None, [], {}
    for event in sse_data(raw):
        deltas.append(event.get("delta", {}).get("type"))
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert deltas.count("input_json_delta") > 4
    assert snapshot is not None and snapshot.stop_reason == "tool_use" == whole.stop_reason
    uses = [(b.name, b.input) for b in snapshot.content if b.type == "tool_use"]
    assert uses == EXPECTED == [(b.name, b.input) for b in whole.content if b.type == "tool_use"]
    assert [b.type for b in snapshot.content] == (["thinking"] if reasoning else []) + ["tool_use", "tool_use"]


async def test_anthropic_disable_parallel_tool_use_reaches_the_grammar() -> None:
    body = {
        "model": "m",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": ANTHROPIC_TOOLS,
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    }
    job = anthropic_translation.to_job(MessagesRequest.model_validate(body))
    assert job.tools.parallel is False and "JSON array" not in job.engine_messages()[0].content


@pytest.mark.parametrize("stream", [True, False])
async def test_responses_streams_function_call_items(stream: bool) -> None:
    body = ResponsesRequest.model_validate(
        {
            "model": "m",
            "input": "hi",
            "stream": stream,
            "store": False,
            "tools": [{"type": "function", **t["function"]} for t in OPENAI_TOOLS],
        }
    )
    job = rt.to_job(body, [])
    run = run_of(job, CALL_TOKENS, PLAIN)
    skeleton = lambda *args: rt.response_body(body, "resp_1", "m", 0, *args)  # noqa: E731
    events = ResponseEvents(skeleton)
    kept = responses._Keeper(None, "a", body, [])  # type: ignore[arg-type]
    raw = b"".join([part async for part in responses._answer(*run, job, events, kept)])
    parsed = [json.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: ")]
    kinds = [e["type"] for e in parsed]
    assert kinds.count("response.function_call_arguments.delta") > 4
    final = OpenAIResponse.model_validate(parsed[-1]["response"])
    calls = [(item.name, json.loads(item.arguments)) for item in final.output if item.type == "function_call"]
    assert calls == EXPECTED
    streamed = "".join(e["delta"] for e in parsed if e["type"] == "response.function_call_arguments.delta")
    assert streamed == "".join(item.arguments for item in final.output if item.type == "function_call")


def test_a_call_cut_by_max_tokens_ends_for_length_not_as_a_call() -> None:
    from lexora_contracts.messages import GenerationChunk
    from lexora_gateway.chat.answer import Answer
    from lexora_gateway.chat.tools import ToolCall

    call = ToolCall("call_1", "get_weather", {})
    for engine_reason, openai_finish, anthropic_stop in (
        ("length", "length", "max_tokens"),
        ("stop", "tool_calls", "tool_use"),
    ):
        done = GenerationChunk(kind="done", finish_reason=engine_reason)
        answer = Answer(done, "", "", [call], reasons=False, reasoning_tokens=0)
        assert chat_answers._finish_reason(answer) == openai_finish
        assert anthropic_translation.stop_reason(engine_reason, None, called=True) == anthropic_stop
