import json

from lexora_contracts.messages import ChatTurn
from lexora_gateway.chat.tools import ToolSpec, ToolUse, guide, parse_call, with_instructions

WEATHER = ToolSpec("get_weather", "Weather now", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = ToolSpec("get_time", "Time now", {"type": "object", "properties": {"zone": {"type": "string"}}})


def test_no_tools_no_change() -> None:
    messages = [ChatTurn(role="user", content="hi")]
    assert with_instructions(messages, ToolUse()) == messages
    assert with_instructions(messages, ToolUse([WEATHER], "none")) == messages
    assert guide(ToolUse([WEATHER], "auto")) is None


def test_tools_are_described_in_the_system_turn() -> None:
    messages = [ChatTurn(role="system", content="Be brief."), ChatTurn(role="user", content="hi")]
    [system, user] = with_instructions(messages, ToolUse([WEATHER, TIME]))
    assert (
        system.content.startswith("Be brief.\n\n") and "get_weather" in system.content and "get_time" in system.content
    )
    assert "Otherwise answer normally" in system.content
    assert user == messages[1]


def test_forced_call_is_guided_by_a_schema_of_the_allowed_tools() -> None:
    kind, text = guide(ToolUse([WEATHER, TIME], "required"))
    schema = json.loads(text)
    assert kind == "json_schema"
    assert [o["properties"]["name"]["const"] for o in schema["anyOf"]] == ["get_weather", "get_time"]
    kind, text = guide(ToolUse([WEATHER, TIME], "auto", "get_time"))
    only = json.loads(text)
    assert only["properties"]["name"] == {"const": "get_time"}
    assert only["properties"]["arguments"] == TIME.parameters


def test_parse_call_accepts_only_offered_tools_with_object_arguments() -> None:
    use = ToolUse([WEATHER])
    call = parse_call(' {"name": "get_weather", "arguments": {"city": "Paris"}} ', use, "call_")
    assert call is not None and call.name == "get_weather" and call.arguments == {"city": "Paris"}
    assert call.id.startswith("call_")
    assert parse_call('{"name": "rm_rf", "arguments": {}}', use, "call_") is None
    assert parse_call('{"name": "get_weather", "arguments": "Paris"}', use, "call_") is None
    assert parse_call("It is sunny in Paris.", use, "call_") is None
    assert parse_call('{"name": "get_weather", "arguments": {}}', ToolUse([WEATHER], "none"), "call_") is None
