"""Tool calling, protocol-free: the prompt, the grammar both engines read, and the calls read out of
an answer as it streams."""

import json

import pytest
import xgrammar
from llama_cpp import LlamaGrammar
from xgrammar.testing import _is_grammar_accept_string

from lexora_contracts.messages import ChatTurn
from lexora_gateway.chat.tool_grammar import tool_call_grammar
from lexora_gateway.chat.tool_stream import CallArguments, CallClosed, CallOpened, CallScanner, TextPiece
from lexora_gateway.chat.tools import ToolSpec, ToolUse, calls_text, guide, with_instructions

WEATHER = ToolSpec(
    "get_weather",
    "Weather now",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)
TIME = ToolSpec("get_time", "Time now", {"type": "object", "properties": {"zone": {"type": "string"}}})
PARIS = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ROME_TIME = '[{"name":"get_weather","arguments":{"city":"Rome","days":2}}, {"name":"get_time","arguments":{}}]'


def test_no_tools_no_change() -> None:
    messages = [ChatTurn(role="user", content="hi")]
    assert with_instructions(messages, ToolUse()) == messages
    assert with_instructions(messages, ToolUse([WEATHER], "none")) == messages
    assert guide(ToolUse([WEATHER], "none")) is None


def test_tools_are_described_in_the_system_turn() -> None:
    messages = [ChatTurn(role="system", content="Be brief."), ChatTurn(role="user", content="hi")]
    [system, user] = with_instructions(messages, ToolUse([WEATHER, TIME]))
    assert system.content.startswith("Be brief.\n\n")
    assert "get_weather" in system.content and "get_time" in system.content
    assert "Otherwise answer normally" in system.content and "JSON array" in system.content
    assert user == messages[1]
    [system, _] = with_instructions(messages, ToolUse([WEATHER, TIME], parallel=False))
    assert "JSON array" not in system.content


def test_earlier_calls_are_written_as_the_model_writes_them() -> None:
    assert json.loads(calls_text([("get_weather", {"city": "Paris"})])) == json.loads(PARIS)
    two = json.loads(calls_text([("get_weather", {"city": "Rome"}), ("get_time", {})]))
    assert [c["name"] for c in two] == ["get_weather", "get_time"]


# ---- the grammar ----------------------------------------------------------------------------------
def accepts(grammar: str, text: str) -> bool:
    return _is_grammar_accept_string(xgrammar.Grammar.from_ebnf(grammar), text)


def test_every_offered_tool_and_mode_gets_a_grammar_both_engines_read() -> None:
    for use in (
        ToolUse([WEATHER, TIME]),
        ToolUse([WEATHER, TIME], "required"),
        ToolUse([WEATHER], "auto", "get_weather"),
    ):
        kind, grammar = guide(use)
        assert kind == "ebnf_grammar"
        LlamaGrammar.from_string(grammar, verbose=False)  # llama.cpp, the local engine
        xgrammar.Grammar.from_ebnf(grammar)  # TensorRT-LLM's guided decoding


def test_auto_allows_prose_or_calls_that_match_the_schemas() -> None:
    _, grammar = guide(ToolUse([WEATHER, TIME]))
    assert accepts(grammar, "It is sunny in Paris.")
    assert accepts(grammar, "")
    assert accepts(grammar, PARIS)
    assert accepts(grammar, ROME_TIME)
    assert not accepts(grammar, '{"name": "get_weather", "arguments": {"city": "Berlin"}}'), "not in the enum"
    assert not accepts(grammar, '{"name": "get_weather", "arguments": {}}'), "city is required"
    assert not accepts(grammar, '{"name": "rm_rf", "arguments": {}}'), "not an offered tool"
    assert not accepts(grammar, '{"answer": 42}'), "JSON that is not a call"
    assert not accepts(grammar, " " + PARIS), "whitespace before a call would hide it"


def test_a_model_without_guided_decoding_gets_a_grammar_only_for_a_forced_call() -> None:
    assert guide(ToolUse([WEATHER, TIME]), guided_decoding=False) is None
    assert guide(ToolUse([WEATHER, TIME], "required"), guided_decoding=False) is not None


def test_forced_and_sequential_modes_narrow_the_grammar() -> None:
    _, forced = guide(ToolUse([WEATHER, TIME], "required"))
    assert accepts(forced, PARIS) and not accepts(forced, "It is sunny.")
    _, named = guide(ToolUse([WEATHER, TIME], "auto", "get_time"))
    assert accepts(named, '{"name": "get_time", "arguments": {"zone": "UTC"}}') and not accepts(named, PARIS)
    _, one = guide(ToolUse([WEATHER, TIME], "required", parallel=False))
    assert accepts(one, PARIS) and not accepts(one, ROME_TIME)


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "object", "properties": {"a": {"type": "number"}}}, ["{}", '{"a": -1.5e3}'], ['{"a": "x"}']),
        (
            {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}}},
            ['{"b": null}', '{"a": true, "b": null}'],
            ['{"b": null, "a": true}'],
        ),
        (
            {
                "type": "object",
                "properties": {"t": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                "required": ["t"],
            },
            ['{"t": ["x", "y"]}'],
            ['{"t": []}', '{"t": [1]}'],
        ),
        (
            {
                "type": "object",
                "properties": {"v": {"anyOf": [{"type": "integer"}, {"const": "all"}]}},
                "required": ["v"],
            },
            ['{"v": 3}', '{"v": "all"}'],
            ['{"v": "some"}'],
        ),
        (
            {"type": "object", "properties": {"v": {"type": ["string", "null"]}}, "required": ["v"]},
            ['{"v": null}', '{"v": "x\\"y"}'],
            ['{"v": 1}'],
        ),
        (
            {"type": "object", "properties": {"r": {"$ref": "#/defs/x"}}, "required": ["r"]},
            ['{"r": {"any": [1, "thing"]}}'],
            ['{"r": }'],
        ),
    ],
)
def test_json_schema_features_are_honoured_or_widened(schema: dict, good: list[str], bad: list[str]) -> None:
    grammar = tool_call_grammar([("f", schema)], allow_prose=False, parallel=False)
    for arguments in good:
        assert accepts(grammar, f'{{"name": "f", "arguments": {arguments}}}'), arguments
    for arguments in bad:
        assert not accepts(grammar, f'{{"name": "f", "arguments": {arguments}}}'), arguments


def test_tool_names_and_properties_are_escaped() -> None:
    grammar = tool_call_grammar(
        [('we"ird\\name', {"type": "object", "properties": {'k"ey': {"type": "string"}}})], False, False
    )
    assert accepts(grammar, json.dumps({"name": 'we"ird\\name', "arguments": {'k"ey': "v"}}))


# ---- reading calls as they stream ---------------------------------------------------------------------
def scan(text: str, use: ToolUse, step: int) -> tuple[list, CallScanner]:
    scanner = CallScanner(use, "call_")
    pieces = []
    for i in range(0, len(text), step):
        pieces += scanner.feed(text[i : i + step])
    return pieces + scanner.finish(), scanner


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_call_opens_with_its_name_and_streams_its_arguments(step: int) -> None:
    pieces, scanner = scan(PARIS, ToolUse([WEATHER, TIME]), step)
    assert (
        isinstance(pieces[0], CallOpened) and pieces[0].name == "get_weather" and pieces[0].call_id.startswith("call_")
    )
    arguments = [p.text for p in pieces if isinstance(p, CallArguments)]
    assert json.loads("".join(arguments)) == {"city": "Paris"}
    assert len(arguments) == (len('{"city": "Paris"}') + step - 1) // step or step > 3
    [closed] = [p for p in pieces if isinstance(p, CallClosed)]
    assert closed.call.arguments == {"city": "Paris"} and closed.call.id == pieces[0].call_id
    assert scanner.calls == [closed.call] and scanner.text == []


@pytest.mark.parametrize("step", [1, 7, 1000])
def test_parallel_calls_come_one_after_another(step: int) -> None:
    pieces, scanner = scan(ROME_TIME, ToolUse([WEATHER, TIME]), step)
    opened = [p for p in pieces if isinstance(p, CallOpened)]
    assert [(p.index, p.name) for p in opened] == [(0, "get_weather"), (1, "get_time")]
    assert [c.arguments for c in scanner.calls] == [{"city": "Rome", "days": 2}, {}]
    by_index = {0: "", 1: ""}
    for p in pieces:
        if isinstance(p, CallArguments):
            by_index[p.index] += p.text
    assert json.loads(by_index[0]) == {"city": "Rome", "days": 2} and json.loads(by_index[1]) == {}
    kinds = [type(p).__name__ for p in pieces]
    assert kinds.index("CallClosed") < kinds.index("CallOpened", 1), "the first closes before the second opens"


def test_strings_with_braces_and_escapes_do_not_end_the_arguments() -> None:
    text = '{"name": "get_time", "arguments": {"zone": "a}\\"]{b", "n": {"x": [1, {"y": 2}]}}}'
    _, scanner = scan(text, ToolUse([TIME]), 1)
    assert scanner.calls[0].arguments == {"zone": 'a}"]{b', "n": {"x": [1, {"y": 2}]}}


def test_prose_streams_at_once_and_leading_whitespace_waits_for_the_first_character() -> None:
    scanner = CallScanner(ToolUse([WEATHER]), "call_")
    assert scanner.feed("\n ") == []
    assert scanner.feed("It is") == [TextPiece("\n It is")]
    assert scanner.feed(" sunny.") == [TextPiece(" sunny.")]
    assert scanner.finish() == [] and scanner.calls == []
    assert "".join(scanner.text) == "\n It is sunny."


def test_json_that_is_not_a_call_is_prose_after_all() -> None:
    for text in ['{"answer": 42}', "[1, 2, 3]", '{"name": "rm_rf", "arguments": {}}', "{", "[link](x)"]:
        pieces, scanner = scan(text, ToolUse([WEATHER]), 2)
        assert "".join(p.text for p in pieces if isinstance(p, TextPiece)) == text, text
        assert scanner.calls == []


def test_without_tools_everything_is_prose() -> None:
    pieces, scanner = scan(PARIS, ToolUse([WEATHER], "none"), 5)
    assert all(isinstance(p, TextPiece) for p in pieces) and "".join(scanner.text) == PARIS


def test_a_call_cut_short_is_closed_with_what_it_has() -> None:
    pieces, scanner = scan('{"name": "get_weather", "arguments": {"city": "Par', ToolUse([WEATHER]), 4)
    assert isinstance(pieces[-1], CallClosed) and scanner.calls[0].name == "get_weather"
    assert scanner.calls[0].arguments == {}
