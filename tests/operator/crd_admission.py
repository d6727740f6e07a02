"""What kube-apiserver does to a custom resource before it stores it, for the API emulator:
prune unknown fields, apply the structural schema's defaults, validate the schema (types, enums,
ranges, patterns, lengths, required) and its CEL rules (`x-kubernetes-validations`, evaluated with
cel-python). A write that fails gets the apiserver's answer: 422 Invalid, with every cause.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
import yaml

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


@dataclass(frozen=True)
class Cause:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class CrdSchema:
    """One version of a CRD's openAPIV3Schema, applied the way kube-apiserver applies it."""

    def __init__(self, crd: dict[str, Any], version: str | None = None):
        versions = crd["spec"]["versions"]
        chosen = next(v for v in versions if version in (None, v["name"]))
        self.group = crd["spec"]["group"]
        self.version = chosen["name"]
        self.plural = crd["spec"]["names"]["plural"]
        self.kind = crd["spec"]["names"]["kind"]
        self.schema = chosen["schema"]["openAPIV3Schema"]

    @classmethod
    def from_file(cls, path: Any) -> CrdSchema:
        with open(path) as f:
            return cls(yaml.safe_load(f))

    def admit(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Cause]]:
        """The object as it would be stored (pruned, defaulted) and what is wrong with it."""
        admitted = copy.deepcopy(obj)
        _prune_and_default(self.schema, admitted, root=True)
        causes: list[Cause] = []
        _validate(self.schema, admitted, old, "", causes, root=True)
        return admitted, causes


def _prune_and_default(schema: dict[str, Any], value: Any, root: bool = False) -> None:
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties")
        if properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key in [k for k in value if k not in properties and not (root and k == "metadata")]:
                del value[key]
        for key, sub in (properties or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value and not (root and key == "metadata"):
                _prune_and_default(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _prune_and_default(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _prune_and_default(schema["items"], item)


def _type_ok(schema: dict[str, Any], value: Any) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    kind = schema.get("type")
    if kind is None:
        return True
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def _validate(schema: dict[str, Any], value: Any, old: Any, path: str, causes: list[Cause], root: bool = False) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable"):
            causes.append(Cause(where, "Invalid value: null"))
        return
    if not _type_ok(schema, value):
        causes.append(Cause(where, f"Invalid value: {value!r}: must be of type {schema.get('type')}"))
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{v}"' for v in schema["enum"])
        causes.append(Cause(where, f"Unsupported value: {value!r}: supported values: {allowed}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            causes.append(
                Cause(where, f"Invalid value: {value}: should be greater than or equal to {schema['minimum']}")
            )
        if "maximum" in schema and value > schema["maximum"]:
            causes.append(Cause(where, f"Invalid value: {value}: should be less than or equal to {schema['maximum']}"))
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append(Cause(where, f"Invalid value: \"{value}\": should match '{schema['pattern']}'"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(Cause(where, f"Invalid value: should be at least {schema['minLength']} chars long"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(Cause(where, f"Too long: may not be more than {schema['maxLength']} bytes"))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(Cause(where, f"Invalid value: should have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(Cause(where, f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                _validate(schema["items"], item, None, f"{path}[{i}]", causes)
    if isinstance(value, dict):
        for key in schema.get("required") or []:
            if key not in value:
                causes.append(Cause(f"{path}.{key}".lstrip("."), "Required value"))
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            causes.append(Cause(where, f"Invalid value: should have at least {schema['minProperties']} properties"))
        properties = schema.get("properties") or {}
        old_dict = old if isinstance(old, dict) else {}
        for key, item in value.items():
            if root and key == "metadata":
                continue
            sub = properties.get(key) or (
                schema["additionalProperties"] if isinstance(schema.get("additionalProperties"), dict) else None
            )
            if sub is not None:
                _validate(sub, item, old_dict.get(key), f"{path}.{key}".lstrip("."), causes)
    for rule in schema.get("x-kubernetes-validations") or []:
        _check_rule(rule, value, old, where, causes)


@cache
def _program(expression: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression))


def _check_rule(rule: dict[str, Any], value: Any, old: Any, where: str, causes: list[Cause]) -> None:
    expression = rule["rule"]
    uses_old = re.search(r"\boldSelf\b", expression) is not None
    if uses_old and old is None:
        return  # a transition rule: only on updates
    activation = {"self": celpy.json_to_cel(value)}
    if uses_old:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = _program(expression).evaluate(activation)
    except celpy.CELEvalError as error:
        causes.append(Cause(where, f"Invalid value: rule {expression!r} could not be evaluated: {error}"))
        return
    if isinstance(result, celpy.CELEvalError):
        causes.append(Cause(where, f"Invalid value: rule {expression!r} could not be evaluated: {result}"))
    elif not bool(result):
        causes.append(Cause(where, f"Invalid value: {rule.get('message') or 'failed rule: ' + expression}"))


def invalid(kind: str, name: str, group: str, causes: list[Cause]) -> dict[str, Any]:
    """kube-apiserver's Status body for a refused write."""
    details = ", ".join(str(c) for c in causes)
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f'{kind}.{group} "{name}" is invalid: {details}',
        "reason": "Invalid",
        "details": {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": c.message, "field": c.field} for c in causes],
        },
        "code": 422,
    }
