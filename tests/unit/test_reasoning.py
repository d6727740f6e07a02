"""Reasoning: the <think> splitter, the request translation both protocols share, and the answers
rendered in each protocol (checked with the official SDKs' own models and stream accumulators)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.anthropic import message_answers as anthropic_answers
from lexora_gateway.anthropic import translation as anthropic_translation
from lexora_gateway.anthropic.schemas import CountTokensRequest, MessagesRequest
from lexora_gateway.chat import jobs
from lexora_gateway.chat.reasoning import (
    ReasoningSetting,
    ReasoningTracker,
    engine_fields,
    splits_output,
)
from lexora_gateway.chat.think_tags import ThinkSplitter, split_whole
from lexora_gateway.openai import chat_answers as openai_answers
from lexora_gateway.openai import translation as openai_translation
from lexora_gateway.openai.schemas import ChatCompletionRequest, CompletionRequest
from support import answer_streams
from support.answer_streams import PLAIN, THINKER, FakeStream, body_of, engine_request, sse_data

# ---- the splitter -----------------------------------------------------------------------------
OUTPUTS = {
    "<think>\nLet me see: 2 + 2.\n</think>\n\nThe answer is 4.": ("Let me see: 2 + 2.", "The answer is 4."),
    "  An answer with no reasoning, kept exactly. ": ("", "  An answer with no reasoning, kept exactly. "),
    "<think>the token limit came while thinking": ("the token limit came while thinking", ""),
    "<think>cut inside the closing tag </thi": ("cut inside the closing tag </thi", ""),
    "<think>a < b and </ c are not tags</think>ok": ("a < b and </ c are not tags", "ok"),
    "<think></think>Hi": ("", "Hi"),
    "\n<think>x\n\n  y  </think>": ("x\n\n  y", ""),
    "<think>x</think>y</think>z": ("x", "y</think>z"),
    "Writing <think> later is answer text": ("", "Writing <think> later is answer text"),
    "<thinking> is not the tag": ("", "<thinking> is not the tag"),
    "<th": ("", "<th"),
    "": ("", ""),
}


def split_in_pieces(text: str, cuts: list[int], implicit_open: bool = False) -> tuple[str, str]:
    splitter = ThinkSplitter(implicit_open)
    reasoning, answer = [], []
    bounds = [0, *sorted(cuts), len(text)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        r, a = splitter.feed(text[start:end])
        reasoning.append(r)
        answer.append(a)
    r, a = splitter.finish()
    return "".join([*reasoning, r]), "".join([*answer, a])


@pytest.mark.parametrize(("output", "expected"), list(OUTPUTS.items()))
def test_splitter_separates_reasoning_from_the_answer(output: str, expected: tuple[str, str]) -> None:
    assert split_whole(output) == expected


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_tags_split_at_every_position_give_the_same_split(output: str) -> None:
    whole = split_whole(output)
    for cut in range(len(output) + 1):
        assert split_in_pieces(output, [cut]) == whole, f"cut at {cut}"
    assert split_in_pieces(output, list(range(1, len(output)))) == whole, "one character at a time"
    rng = random.Random(output)
    for _ in range(50):
        cuts = rng.sample(range(len(output) + 1), k=min(3, len(output) + 1))
        assert split_in_pieces(output, cuts) == whole, f"cuts at {cuts}"


def test_text_without_tags_streams_through_at_once() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("Hello") == ("", "Hello")
    assert splitter.feed(" <think> world") == ("", " <think> world")
    assert splitter.finish() == ("", "")


def test_reasoning_is_emitted_as_it_arrives_holding_back_only_a_possible_tag() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<thi") == ("", "")
    assert splitter.feed("nk>Let me") == ("Let me", "")
    assert splitter.feed(" think </th") == (" think", "")
    assert splitter.feed("ink>\n\nDone") == ("", "Done")


def test_a_template_that_opens_the_block_itself_starts_in_reasoning() -> None:
    for output in ("Let me think.\n</think>\n\nAnswer", "<think>Let me think.</think>Answer"):
        whole = split_whole(output, implicit_open=True)
        assert whole == ("Let me think.", "Answer")
        for cut in range(len(output) + 1):
            assert split_in_pieces(output, [cut], implicit_open=True) == whole
    assert split_whole("still thinking", implicit_open=True) == ("still thinking", "")


def test_reasoning_tokens_are_counted_when_the_deltas_tell() -> None:
    tracker = ReasoningTracker()
    deltas = ["<think>", "Two", " plus two", "</think>", "\n\n", "Four", "."]
    for count, text in enumerate(deltas, start=1):
        tracker.feed(text, count)
    tracker.finish(len(deltas))
    assert tracker.reasoning_tokens == 4 and tracker.reasoned
    single_token_close = ReasoningTracker()
    single_token_close.feed("<think>a", 2)
    single_token_close.feed("</think>b", 3)
    assert single_token_close.reasoning_tokens == 3
    whole = ReasoningTracker()
    assert whole.split("<think>a</think>b", 9) == ("a", "b")
    assert whole.reasoning_tokens is None, "one delta with both: not known, not guessed"
    unterminated = ReasoningTracker()
    unterminated.split("<think>a long thought", 7)
    assert unterminated.reasoning_tokens == 7
    plain = ReasoningTracker()
    plain.split("just an answer", 3)
    assert plain.reasoning_tokens == 0 and not plain.reasoned


def test_exclude_leaves_the_reasoning_out() -> None:
    assert openai_answers.reasoning_fields("thought", exclude=True) == {}
    assert openai_answers.reasoning_fields("", exclude=False) == {}
    assert openai_answers.reasoning_fields("thought", exclude=False) == {
        "reasoning": "thought",
        "reasoning_content": "thought",
    }


# ---- requests ---------------------------------------------------------------------------------
def openai_body(**params: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **params}
    )


def settled(setting: ReasoningSetting | None, max_tokens: int) -> tuple[bool, int | None, bool] | None:
    """The setting as a job of `max_tokens` sends it: (enabled, budget, exclude)."""
    return None if setting is None else (setting.enabled, setting.budget(max_tokens), setting.exclude)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, None),
        ({"reasoning_effort": "high"}, (True, 409, False)),  # 80% of the default max_tokens, 512
        ({"reasoning": {"effort": "low"}, "max_tokens": 1000}, (True, 200, False)),
        ({"reasoning": {"effort": "medium"}, "reasoning_effort": "medium"}, (True, 256, False)),
        ({"reasoning": {"max_tokens": 300, "effort": "high"}, "max_tokens": 400}, (True, 300, False)),
        ({"reasoning": {}}, (True, None, False)),
        ({"reasoning": {"exclude": True}}, (True, None, True)),
        ({"reasoning": {"enabled": True}, "max_completion_tokens": 64}, (True, None, False)),
        ({"reasoning": {"enabled": False}}, (False, 0, False)),
        ({"reasoning": {"max_tokens": 0}}, (False, 0, False)),
    ],
)
def test_openai_reasoning_parameters_become_one_setting(
    params: dict[str, Any], expected: tuple[bool, int | None, bool] | None
) -> None:
    job = openai_translation.to_job(openai_body(**params))
    assert job.reasoning == openai_translation.reasoning_setting(openai_body(**params))
    assert settled(job.reasoning, jobs.resolve_max_tokens(job, THINKER)) == expected


def test_an_effort_takes_its_share_of_the_max_tokens_the_model_allows() -> None:
    small = THINKER.model_copy(update={"context_length": 256})
    job = openai_translation.to_job(openai_body(reasoning_effort="high"))
    assert jobs.resolve_max_tokens(job, small) == 256, "the default max_tokens, within the context"
    request = engine_request(job, small, 256)
    assert request.reasoning_budget == 204


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"reasoning": {"effort": "high"}, "reasoning_effort": "low"}, "reasoning_effort"),
        ({"reasoning": {"enabled": False, "effort": "low"}}, "reasoning.enabled"),
        ({"reasoning": {"max_tokens": 0, "enabled": True}}, "reasoning.max_tokens"),
    ],
)
def test_contradictory_reasoning_parameters_are_refused_naming_the_param(params: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai_translation.reasoning_setting(openai_body(**params))
    assert caught.value.param == param


def test_a_budget_not_below_max_tokens_is_capped_below_it_as_the_documented_example_expects() -> None:
    documented = openai_translation.to_job(openai_body(reasoning={"effort": "low", "max_tokens": 512}, max_tokens=256))
    assert settled(documented.reasoning, jobs.resolve_max_tokens(documented, THINKER)) == (True, 255, False)
    unbounded = openai_translation.to_job(openai_body(reasoning={"max_tokens": 600}))
    assert settled(unbounded.reasoning, jobs.resolve_max_tokens(unbounded, THINKER)) == (True, 511, False)  # 512


def anthropic_body(**params: Any) -> MessagesRequest:
    return MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "hi"}], **params}
    )


def test_anthropic_thinking_maps_to_the_same_setting() -> None:
    assert anthropic_translation.reasoning_setting(anthropic_body()) is None
    enabled = anthropic_body(thinking={"type": "enabled", "budget_tokens": 1024})
    assert anthropic_translation.reasoning_setting(enabled) == ReasoningSetting(True, 1024)
    assert anthropic_translation.to_job(enabled).reasoning == ReasoningSetting(True, 1024)
    assert anthropic_translation.reasoning_setting(anthropic_body(thinking={"type": "disabled"})) == ReasoningSetting(
        False, 0
    )
    with pytest.raises(InvalidRequest) as caught:
        anthropic_translation.reasoning_setting(anthropic_body(thinking={"type": "enabled", "budget_tokens": 2048}))
    assert caught.value.param == "thinking.budget_tokens"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"thinking": {"type": "adaptive"}}, (True, None, False)),  # the model decides
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, (True, 409, False)),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"}}, (True, 1024, False)),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, (True, 1638, False)),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}}, (True, 1843, False)),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, (True, 1945, False)),
        ({"thinking": {"type": "enabled"}, "output_config": {"effort": "low"}}, (True, 409, False)),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 100}, "output_config": {"effort": "max"}},
            (True, 100, False),
        ),
        ({"thinking": {"type": "disabled"}, "output_config": {"effort": "max"}}, (False, 0, False)),
        ({"output_config": {"effort": "high"}}, None),  # no thinking asked for: the model's default
        ({"thinking": {"type": "adaptive", "display": "omitted"}}, (True, None, True)),
        ({"thinking": {"type": "enabled", "display": "summarized"}}, (True, None, False)),
    ],
)
def test_adaptive_thinking_and_effort_become_a_budget_share_of_max_tokens(
    params: dict[str, Any], expected: tuple[bool, int | None, bool] | None
) -> None:
    job = anthropic_translation.to_job(anthropic_body(**params))
    assert settled(job.reasoning, jobs.resolve_max_tokens(job, THINKER)) == expected  # max_tokens 2048


def test_an_unknown_effort_or_display_is_refused_naming_it() -> None:
    from lexora_gateway.http import parse_body

    base = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    for params, param in [
        ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
        ({"thinking": {"type": "adaptive", "display": "verbose"}}, "thinking.display"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            parse_body(MessagesRequest, json.dumps({**base, **params}).encode())
        assert caught.value.param == param


def count_body(**params: Any) -> CountTokensRequest:
    return CountTokensRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **params})


def test_a_token_count_asks_for_the_budget_the_same_request_would_send() -> None:
    assert anthropic_translation.count_budget(count_body(), THINKER) is None, "the model's default: it thinks"
    assert anthropic_translation.count_budget(count_body(thinking={"type": "disabled"}), THINKER) == 0
    assert (
        anthropic_translation.count_budget(count_body(thinking={"type": "enabled", "budget_tokens": 300}), THINKER)
        == 300
    )
    assert (
        anthropic_translation.count_budget(count_body(thinking={"type": "enabled", "budget_tokens": 300}), PLAIN)
        is None
    )
    assert anthropic_translation.count_budget(count_body(thinking={"type": "adaptive"}), THINKER) is None
    # An effort would send a share of max_tokens, which a count has not: any budget > 0 says "think".
    adaptive_high = count_body(thinking={"type": "adaptive"}, output_config={"effort": "high"})
    assert anthropic_translation.count_budget(adaptive_high, THINKER) == 1


def test_only_reasoning_models_get_reasoning_fields() -> None:
    high = ReasoningSetting(True, 409)
    assert engine_fields(high, PLAIN, 512) == (False, None), "ignored by a model without the capability"
    assert engine_fields(high, THINKER, 512) == (True, 409)
    assert engine_fields(None, THINKER, 512) == (True, None), "the model's default"
    assert engine_fields(ReasoningSetting(False, 0), THINKER, 512) == (False, 0)
    job = openai_translation.to_job(openai_body(reasoning_effort="high"))
    on_plain = engine_request(job, PLAIN, 512)
    on_thinker = engine_request(job, THINKER, 512)
    assert (on_plain.reasoning, on_plain.reasoning_budget, splits_output(on_plain)) == (False, None, False)
    assert (on_thinker.reasoning, on_thinker.reasoning_budget, splits_output(on_thinker)) == (True, 409, True)
    raw = openai_translation.completion_to_job(CompletionRequest.model_validate({"model": "m", "prompt": "x"}))
    on_raw = engine_request(raw, THINKER, 8)
    assert not splits_output(on_raw), "a raw prompt has no chat template to think in"


def test_the_budget_reaches_triton_only_when_set() -> None:
    from lexora_router.triton_engine import build_inputs

    job = openai_translation.to_job(openai_body(reasoning_effort="low"))
    with_budget = engine_request(job, THINKER, 512)
    without = engine_request(job, PLAIN, 512)
    [budget] = [value for name, _, value in build_inputs(with_budget) if name == "reasoning_budget"]
    assert budget.tolist() == [102]
    assert "reasoning_budget" not in [name for name, _, _ in build_inputs(without)]


# ---- answers, as the SDKs read them -------------------------------------------------------------
TOKENS = ["<think>", "\n", "Two plus", " two.", "\n", "</think>", "\n\n", "It is", " 4."]


def run_of(job: jobs.ChatJob, tokens: list[str] = TOKENS) -> tuple[FakeStream, GenerationChunk]:
    return answer_streams.run_of(job, tokens)


async def test_openai_answer_carries_reasoning_apart_from_content() -> None:
    job = openai_translation.to_job(openai_body(reasoning_effort="low"))
    stream, first = run_of(job)
    response = await openai_answers.respond(stream, first, job, False, {})
    completion = ChatCompletion.model_validate_json(await body_of(response))
    message = completion.choices[0].message
    assert message.content == "It is 4."
    assert message.model_extra["reasoning"] == "Two plus two." == message.model_extra["reasoning_content"]
    # Read delta by delta, as a stream is: the block ended at a delta boundary, so the count is exact.
    assert completion.usage.completion_tokens_details.reasoning_tokens == 6
    assert stream.released


async def test_openai_stream_sends_reasoning_deltas_then_content() -> None:
    job = openai_translation.to_job(
        openai_body(reasoning_effort="low", stream=True, stream_options={"include_usage": True})
    )
    stream, first = run_of(job)
    events = sse_data(await body_of(await openai_answers.respond(stream, first, job, True, {})))
    assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning", "") for d in deltas)
    assert reasoning == "Two plus two."
    assert "".join(d.content or "" for d in deltas) == "It is 4."
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not (d.model_extra or {}).get("reasoning") for d in deltas[first_content:])
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 6
    assert "<think>" not in json.dumps(events[:-1])


async def test_openai_exclude_keeps_reasoning_out_of_answer_and_stream() -> None:
    for streaming in (False, True):
        job = openai_translation.to_job(openai_body(reasoning={"exclude": True}, stream=streaming))
        stream, first = run_of(job)
        raw = await body_of(await openai_answers.respond(stream, first, job, False, {}))
        assert b"reasoning" not in raw.replace(b"reasoning_tokens", b"") and b"Two plus" not in raw
        assert b"It is" in raw


async def test_anthropic_answer_has_a_signed_thinking_block_before_the_text() -> None:
    job = anthropic_translation.to_job(anthropic_body(thinking={"type": "enabled", "budget_tokens": 1024}))
    stream, first = run_of(job)
    response = await anthropic_answers.respond(stream, first, job, "thinker", {})
    message = Message.model_validate_json(await body_of(response))
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Two plus two." and message.content[0].signature
    assert message.content[1].text == "It is 4."


async def test_anthropic_stream_accumulates_to_the_same_message() -> None:
    whole_job = anthropic_translation.to_job(anthropic_body())
    whole = Message.model_validate_json(
        await body_of(await anthropic_answers.respond(*run_of(whole_job), whole_job, "thinker", {}))
    )
    job = anthropic_translation.to_job(anthropic_body(stream=True))
    stream, first = run_of(job)
    raw = await body_of(await anthropic_answers.respond(stream, first, job, "thinker", {}))
    snapshot = None
    types = []
    for event in sse_data(raw):
        types.append((event["type"], event.get("delta", {}).get("type")))
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs={})
    assert snapshot is not None
    assert [b.model_dump() for b in snapshot.content] == [b.model_dump() for b in whole.content]
    assert types.index(("content_block_delta", "signature_delta")) < types.index(("content_block_delta", "text_delta"))
    assert snapshot.stop_reason == "end_turn" and snapshot.usage.output_tokens == len(TOKENS)


async def test_a_reasoning_model_that_skips_thinking_answers_with_text_only() -> None:
    job = anthropic_translation.to_job(anthropic_body(stream=True))
    stream, first = run_of(job, ["Just", " text."])
    raw = await body_of(await anthropic_answers.respond(stream, first, job, "thinker", {}))
    snapshot = None
    for event in sse_data(raw):
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs={})
    assert [(b.type, b.text) for b in snapshot.content] == [("text", "Just text.")]


async def test_omitted_display_keeps_a_signed_thinking_block_with_empty_text() -> None:
    job = anthropic_translation.to_job(anthropic_body(thinking={"type": "adaptive", "display": "omitted"}))
    stream, first = run_of(job)
    message = Message.model_validate_json(
        await body_of(await anthropic_answers.respond(stream, first, job, "thinker", {}))
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "" and message.content[0].signature
    assert message.content[1].text == "It is 4."


async def test_omitted_display_streams_the_thinking_block_with_only_its_signature() -> None:
    job = anthropic_translation.to_job(anthropic_body(thinking={"type": "adaptive", "display": "omitted"}, stream=True))
    stream, first = run_of(job)
    raw = await body_of(await anthropic_answers.respond(stream, first, job, "thinker", {}))
    snapshot = None
    deltas = []
    for event in sse_data(raw):
        deltas.append(event.get("delta", {}).get("type"))
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs={})
    assert "thinking_delta" not in deltas and "signature_delta" in deltas
    assert b"Two plus" not in raw
    assert [block.type for block in snapshot.content] == ["thinking", "text"]
    assert snapshot.content[0].thinking == "" and snapshot.content[0].signature
    assert snapshot.content[1].text == "It is 4."
