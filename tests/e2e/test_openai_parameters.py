"""OpenAI chat parameters beyond the basics, through the SDK, on the real engine."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

POEM = [{"role": "user", "content": "Write a poem about the sea."}]


def sdk(lexora: RunningStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=lexora.create_account().api_key, max_retries=0)


def test_json_object_response_format_returns_json(lexora: RunningStack) -> None:
    reply = sdk(lexora).chat.completions.create(
        model=LOCAL_CHAT_MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a name and an age."}],
        response_format={"type": "json_object"},
        max_tokens=80,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    json.loads(reply.choices[0].message.content)


def test_json_schema_response_format_is_followed(lexora: RunningStack) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": ["Tom", "Felix"]}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = sdk(lexora).chat.completions.create(
        model=LOCAL_CHAT_MODEL,
        messages=[{"role": "user", "content": "Describe a cat."}],
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema, "strict": True}},
        max_tokens=60,
    )
    cat = json.loads(reply.choices[0].message.content)
    assert cat["name"] in ("Tom", "Felix") and isinstance(cat["age"], int)


def test_json_schema_format_without_a_schema_is_400(lexora: RunningStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(lexora).chat.completions.create(
            model=LOCAL_CHAT_MODEL, messages=POEM, response_format={"type": "json_schema"}
        )
    assert caught.value.body["param"] == "response_format.json_schema"


def test_penalties_reach_the_engine(lexora: RunningStack) -> None:
    client = sdk(lexora)
    args = {"model": LOCAL_CHAT_MODEL, "messages": POEM, "max_tokens": 40, "temperature": 0}
    plain = client.chat.completions.create(**args).choices[0].message.content
    penalised = client.chat.completions.create(**args, frequency_penalty=2, presence_penalty=2).choices[0]
    assert penalised.message.content != plain


def test_seed_makes_sampling_reproducible(lexora: RunningStack) -> None:
    client = sdk(lexora)
    args = {"model": LOCAL_CHAT_MODEL, "messages": POEM, "max_tokens": 16, "temperature": 1.2, "seed": 42}
    assert client.chat.completions.create(**args).choices[0].message.content == (
        client.chat.completions.create(**args).choices[0].message.content
    )


def test_stop_string_and_list(lexora: RunningStack) -> None:
    client = sdk(lexora)
    args = {"model": LOCAL_CHAT_MODEL, "messages": POEM, "max_tokens": 40, "temperature": 0}
    full = client.chat.completions.create(**args).choices[0].message.content
    word = full.split()[3]
    for stop in (word, ["never-there", word]):
        reply = client.chat.completions.create(**args, stop=stop).choices[0]
        assert reply.message.content == full[: full.index(word)]
        assert reply.finish_reason == "stop"


def test_max_tokens_is_respected_with_finish_reason_length(lexora: RunningStack) -> None:
    reply = sdk(lexora).chat.completions.create(model=LOCAL_CHAT_MODEL, messages=POEM, max_completion_tokens=5)
    assert reply.usage.completion_tokens == 5 and reply.choices[0].finish_reason == "length"


def test_a_single_model_is_described_with_capabilities(lexora: RunningStack) -> None:
    model = sdk(lexora).models.retrieve(LOCAL_CHAT_MODEL)
    assert model.id == LOCAL_CHAT_MODEL
    assert "tools" in model.model_extra["capabilities"] and model.model_extra["status"] == "live"
    response = httpx.get(f"{lexora.base_url}/models/no/such-model")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
