"""The OpenAI Agents SDK (PyPI openai-agents, pinned in the test extra) running one tool-using agent
against the running stack, configured as docs/integrations.md tells a user: an
`AsyncOpenAI(base_url=<gateway>/v1, api_key=<a Lexora key>)` client given to the SDK's model, over
chat completions (`OpenAIChatCompletionsModel`) and over the Responses API (`OpenAIResponsesModel`).

A 135M model seldom decides on its own to call a tool, so the agent's first turn forces it
(`tool_choice` "required", or the tool by name) and `tool_use_behavior="stop_on_first_tool"` makes
the tool's result the run's final output. The gateway decodes the call constrained by the tool's
JSON schema, so the arguments always parse and validate: the test asserts that the SDK ran the
Python function with arguments the schema allows, that the run finished, and that the account was
charged what the gateway recorded. What the agent produced goes to the test's output (pytest -s)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

import jsonschema
import pytest
from openai import AsyncOpenAI

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

try:
    import agents
except ImportError as error:  # pragma: no cover - a broken install is a failure, not a skip
    agents = None
    IMPORT_ERROR: ImportError | None = error
else:
    IMPORT_ERROR = None

PRICE = 40_000  # micro-USD per 1M tokens, input and output, for the local model
CITIES = ("Paris", "Rome", "Tokyo")
ENDPOINTS = {"chat_completions": "/v1/chat/completions", "responses": "/v1/responses"}


def sdk() -> Any:
    if agents is None:
        pytest.fail(
            f"openai-agents is not installed ({IMPORT_ERROR}): run scripts/bootstrap.sh "
            "(the pinned openai-agents is in pyproject.toml's test extra)"
        )
    return agents


async def run_weather_agent(base_url: str, api_key: str, api: str, calls: list[str]) -> tuple[Any, dict[str, Any]]:
    """One agent with one function tool, its first turn forced to call it: the run's result and the
    tool's JSON schema as the SDK sent it."""
    sdk_ = sdk()
    sdk_.set_tracing_disabled(True)  # traces would go to OpenAI's platform

    @sdk_.function_tool
    def get_weather(city: Literal["Paris", "Rome", "Tokyo"]) -> str:
        """The weather now in one city."""
        calls.append(city)
        return f"Sunny and 21 C in {city}."

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    try:
        if api == "chat_completions":
            model: Any = sdk_.OpenAIChatCompletionsModel(model=LOCAL_CHAT_MODEL, openai_client=client)
            tool_choice = "required"
        else:
            model = sdk_.OpenAIResponsesModel(model=LOCAL_CHAT_MODEL, openai_client=client)
            tool_choice = "get_weather"
        agent = sdk_.Agent(
            name="Weather",
            instructions="You answer questions about the weather. Use the get_weather tool.",
            tools=[get_weather],
            model=model,
            model_settings=sdk_.ModelSettings(tool_choice=tool_choice, max_tokens=64),
            tool_use_behavior="stop_on_first_tool",
        )
        result = await sdk_.Runner.run(agent, "What is the weather in Paris?", max_turns=2)
        return result, get_weather.params_json_schema
    finally:
        await client.close()


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_agents_sdk_runs_a_tool_using_agent_and_is_charged(lexora: RunningStack, api: str) -> None:
    sdk()  # fails the test, with what to do, when openai-agents is missing
    account = lexora.create_account()
    before = lexora.balance(account.account_id).balance_micro
    calls: list[str] = []
    result, schema = asyncio.run(run_weather_agent(lexora.base_url, account.api_key, api, calls))
    tool_calls = [item.raw_item for item in result.new_items if item.type == "tool_call_item"]
    print(
        f"\n[Agents SDK over {api}] tool calls: "
        f"{[(getattr(c, 'name', None), getattr(c, 'arguments', None)) for c in tool_calls]}\n"
        f"function ran with: {calls}\nfinal_output: {result.final_output!r}\n"
        f"usage: {result.context_wrapper.usage.requests} request(s), {result.context_wrapper.usage.input_tokens} in, "
        f"{result.context_wrapper.usage.output_tokens} out"
    )
    # The SDK parsed the model's arguments, validated them against the tool's schema, and ran it.
    assert len(tool_calls) >= 1 and tool_calls[0].name == "get_weather", result.new_items
    arguments = json.loads(tool_calls[0].arguments)
    jsonschema.validate(arguments, schema)
    assert calls == [arguments["city"]] and calls[0] in CITIES, calls
    assert result.final_output == f"Sunny and 21 C in {calls[0]}.", result.final_output
    usage = result.context_wrapper.usage
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens > 0, usage

    deadline = time.monotonic() + 30
    while True:
        rows = lexora.usage_rows(account.account_id)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 1, rows
    [row] = rows
    assert (row["endpoint"], row["status_code"], row["model"]) == (ENDPOINTS[api], 200, LOCAL_CHAT_MODEL), row
    # The SDK's usage is the gateway's, and the charge is exactly that usage at the model's price.
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.input_tokens, usage.output_tokens), row
    assert row["cost_pico"] == request_cost_pico(row["prompt_tokens"], row["completion_tokens"], PRICE, PRICE) > 0
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0
    assert balance.balance_micro < before
    lexora.assert_ledger_consistent(account.account_id)
