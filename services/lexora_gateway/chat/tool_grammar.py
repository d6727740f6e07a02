"""The grammar that constrains a model's answer when tools are offered. Pure.

The answer is either prose or tool calls written as JSON: one call `{"name": …, "arguments": {…}}`,
or, when parallel calls are allowed, a JSON array of them. The grammar makes every call parse and
match an offered tool's argument schema, and leaves prose free. With `tool_choice` forcing a call,
prose is not an option.

It is written in the EBNF that both engines read: GBNF for llama.cpp (the local engine) and
xgrammar's EBNF for TensorRT-LLM's guided decoding (guide type "ebnf_grammar"). Only the subset the
two share is used: `::=` rules, quoted literals, character classes, grouping, `|`, `*`, `+`, `?`.

JSON Schema is mapped as far as a grammar can honour it: types, properties (in their declared
order, required ones always present, optional ones optional), items, enum, const, anyOf/oneOf.
Anything else (`$ref`, `pattern`, `format`, numeric bounds, …) is widened to what the type allows,
so an unusual schema loosens the constraint instead of failing the request.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Between JSON tokens: at most one space, so a small model cannot spin on whitespace.
WS = "ws"
_BASE_RULES = {
    "ws": '" "?',
    "string": r'"\"" char* "\""',
    "char": r'[^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" hex hex hex hex)',
    "hex": "[0-9a-fA-F]",
    "integer": '"-"? ("0" | [1-9] [0-9]*)',
    "number": r'integer ("." [0-9]+)? ([eE] [-+]? [0-9]+)?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "object | array | string | number | boolean | null",
    "object": r'"{" ws (string ws ":" ws value (ws "," ws string ws ":" ws value)*)? ws "}"',
    "array": r'"[" ws (value (ws "," ws value)*)? ws "]"',
}
_RESERVED = {"root", "calls", "prose"}
# Prose may not open with what opens a call (or with whitespace before one), so the first
# character tells which it is.
_PROSE = r"([^{\[ \t\r\n\x00] [^\x00]*)?"


def literal(text: str) -> str:
    """A grammar literal matching `text` exactly."""
    escaped = "".join("\\" + ch if ch in '"\\' else f"\\x{ord(ch):02x}" if ord(ch) < 0x20 else ch for ch in text)
    return f'"{escaped}"'


def json_literal(value: Any) -> str:
    """A grammar literal matching `value` as compact JSON."""
    return literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class _Builder:
    def __init__(self) -> None:
        self.rules: dict[str, str] = dict(_BASE_RULES)
        self._named: dict[str, str] = {}  # rule body -> name, so equal schemas share a rule

    def rule(self, hint: str, body: str) -> str:
        if body in self._named:
            return self._named[body]
        base = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-") or "r"
        name, n = base, 1
        while name in self.rules or name in _RESERVED:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        self._named[body] = name
        return name

    def value(self, schema: Any, hint: str) -> str:
        """A rule name (or an expression) for a JSON value matching `schema`."""
        if not isinstance(schema, dict) or not schema:
            return "value"
        if "const" in schema:
            return json_literal(schema["const"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rule(f"{hint}-enum", " | ".join(json_literal(v) for v in schema["enum"]))
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                rest = {k: v for k, v in schema.items() if k != key}
                alternatives = [self.value({**rest, **o} if isinstance(o, dict) else o, hint) for o in options]
                return self.rule(f"{hint}-of", " | ".join(dict.fromkeys(alternatives)))
        kind = schema.get("type")
        if isinstance(kind, list):
            alternatives = [self.value({**schema, "type": k}, hint) for k in kind if isinstance(k, str)]
            return self.rule(f"{hint}-types", " | ".join(dict.fromkeys(alternatives))) if alternatives else "value"
        if kind == "object" or (kind is None and isinstance(schema.get("properties"), dict)):
            return self._object(schema, hint)
        if kind == "array":
            return self._array(schema, hint)
        if kind in ("string", "integer", "number", "boolean", "null"):
            return kind
        return "value"

    def _object(self, schema: dict[str, Any], hint: str) -> str:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return "object"
        listed = schema.get("required")
        required = [n for n in properties if isinstance(listed, list) and n in listed]
        optional = [n for n in properties if n not in required]
        pair = {
            n: f'{literal(json.dumps(n, ensure_ascii=False))} ws ":" ws {self.value(s, f"{hint}-{n}")}'
            for n, s in properties.items()
        }
        later = [f'(ws "," ws {pair[n]})?' for n in optional]
        if required:
            body = ' ws "," ws '.join(pair[n] for n in required)
            inner = " ".join([body, *later])
        else:  # all optional: whichever comes first has no comma before it
            starts = [" ".join([pair[n], *later[i + 1 :]]) for i, n in enumerate(optional)]
            inner = "(" + " | ".join(f"({s})" for s in starts) + ")?"
        return self.rule(f"{hint}-obj", f'"{{" ws {inner} ws "}}"')

    def _array(self, schema: dict[str, Any], hint: str) -> str:
        item = self.value(schema.get("items"), f"{hint}-item")
        items = f'{item} (ws "," ws {item})*'
        if not isinstance(schema.get("minItems"), int) or schema["minItems"] < 1:
            items = f"({items})?"
        return self.rule(f"{hint}-arr", f'"[" ws {items} ws "]"')

    def text(self, root: str) -> str:
        return "\n".join([f"root ::= {root}", *(f"{name} ::= {body}" for name, body in self.rules.items())]) + "\n"


def tool_call_grammar(tools: list[tuple[str, dict[str, Any]]], allow_prose: bool, parallel: bool) -> str:
    """The grammar for an answer to a request offering `tools` ((name, argument schema) pairs, the
    ones the model may call): calls, or prose too when `allow_prose`; several calls in a JSON array
    when `parallel`."""
    builder = _Builder()
    calls = []
    for name, parameters in tools:
        arguments = builder.value(parameters or {"type": "object"}, f"{name}-args")
        head = f'"{{" ws "\\"name\\"" ws ":" ws {json_literal(name)} ws "," ws "\\"arguments\\"" ws ":" ws'
        calls.append(builder.rule(f"{name}-call", f'{head} {arguments} ws "}}"'))
    call = builder.rule("call", " | ".join(calls))
    answer = f'{call} | "[" ws {call} (ws "," ws {call})* ws "]"' if parallel else call
    builder.rules["calls"] = answer
    if allow_prose:
        builder.rules["prose"] = _PROSE
        return builder.text("calls | prose")
    return builder.text("calls")
