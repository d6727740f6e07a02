"""Schema-driven fuzzing: schemathesis turns the served /openapi.json into requests, valid and not.

For every operation of the document (a test checks that none is left out): no input is answered
with a 5xx or left hanging, every error arrives in its protocol's envelope, a body that violates the
document is refused with a 400, and a body the document allows is not refused for a field the
document describes.

The requests come from schemathesis's two generators, both deterministic: its coverage phase
(boundary values, wrong types, missing and extra properties for each keyword of the schema, no
randomness) and Hypothesis with derandomize=True (a fixed seed). They are generated once, from the
document, and replayed against each stack.

Generation on the real model is slow, so nearly all of it runs with an account that has no credit:
a body the server accepts is answered 402 right after validation and the credit hold, having been
through every check on the way. A few bodies per generation route then run on a funded account,
through the engine, with a handful of output tokens.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.transport import Response as SchemathesisResponse
from schemathesis.specs.openapi.checks import negative_data_rejection

from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_EMBEDDING_MODEL, LOCAL_IMAGE_MODEL
from support.stack import RunningStack

# A request with no answer within this is a hung request: the client gives up and the test fails.
# Nothing the server does before generating takes more than moments; a job on the engine is cut
# at the gateway's job timeout (120 s) with a 504, so a funded request gets longer.
REQUEST_TIMEOUT_S = 30
FUNDED_TIMEOUT_S = 150
ANTHROPIC_PATHS = {"/v1/messages", "/v1/messages/count_tokens"}
# Embeddings and images are fuzzed unfunded only (every accepted body stops at 402).
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")
MEDIA_PATHS = ("/v1/embeddings", "/v1/images/generations")
BODY_PATHS = (*GENERATION_PATHS, "/v1/messages/count_tokens", *MEDIA_PATHS)
GET_PATHS = (
    "/v1/models",
    "/v1/models/{model_id}",
    "/v1/health",
    "/v1/usage",
    "/v1/key",
    "/v1/credits",
    "/v1/billing/packages",
    "/v1/responses/{response_id}",
    "/v1/responses/{response_id}/input_items",
    "/v1/credits/transactions",
    "/v1/me",
    "/v1/auth/signup-mode",
    "/v1/keys",
    "/v1/settings",
    "/v1/admin/accounts",
    "/v1/admin/accounts/{account_id}",
    "/v1/admin/models",
)
# What the fuzz's ordinary key may not call answers it 403 (after its input is read): the admin
# routes, and the account API that is for a signed-in session or an admin's key (docs/console.md).
ADMIN_PREFIX = "/v1/admin/"
SESSION_OR_ADMIN = ("/v1/keys", "/v1/keys/{key_id}", "/v1/settings")
# The rest of the document: a stored response deleted (of nobody's, or of another account's), and a
# checkout. A checkout the document allows goes on to Stripe, which no test machine reaches: 502
# payment_provider_error, by design (tests/e2e/test_topups_stripe.py); everything else is < 500.
OTHER_OPERATIONS = (
    ("DELETE", "/v1/responses/{response_id}"),
    ("POST", "/v1/billing/checkout"),
    # The account API behind the console: sign-up and sign-in take no key (sign-in attempts are
    # limited: 429), the rest is for a session or an admin's key (403 for the fuzz's key).
    ("POST", "/v1/auth/signup"),
    ("POST", "/v1/auth/signin"),
    ("POST", "/v1/auth/signout"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("PATCH", "/v1/settings"),
    ("PATCH", "/v1/admin/accounts/{account_id}"),
    ("POST", "/v1/admin/accounts/{account_id}/grants"),
    ("POST", "/v1/admin/invitations"),
)
BY_DESIGN_5XX = {"/v1/billing/checkout": (502, "payment_provider_error")}
# Hypothesis examples per body route and mode, on top of the coverage phase's cases.
RANDOM_EXAMPLES = 20
FUNDED_EXAMPLES = 4
FUNDED_MAX_TOKENS = 3
# The served model, by id and by alias: a drawn model name is swapped for these in two of every
# three bodies, so the requests get past the model lookup to the limits, the credit hold, the engine.
REAL_MODELS = (LOCAL_CHAT_MODEL, "smollm2")
REAL_MODELS_BY_PATH = {
    "/v1/embeddings": (LOCAL_EMBEDDING_MODEL, "all-minilm-l6-v2"),
    "/v1/images/generations": (LOCAL_IMAGE_MODEL, "flux-schnell"),
}
# Bodies schemathesis does not draw on its own: names the database and the logs must survive.
EDGE_MODEL_NAMES = ("m" * 300, "nul\u0000model", "\u00e9\u4e2d\U0001f600", " ", "../../etc/passwd")
# Schema-valid bodies may still be refused for what a schema cannot say (a tool_choice naming a tool
# that is not offered, a prompt longer than the model's context, ...). These are the fields such a 400
# may name; a 400 naming any other field is a disagreement between the document and the server.
SEMANTIC_PARAMS = re.compile(
    r"^(max_tokens|messages|tool_choice(\.name)?|prompt|response_format\.json_schema|reasoning\.max_tokens|"
    r"messages\[\d+\]\.(content\[\d+\].*|tool_calls\[\d+\]\.function\.arguments)|"
    # /v1/responses: an empty input, an item's arguments that are not a JSON object, its images, a
    # json_schema format without its schema, background responses
    r"input|input\[\d+\]\.(arguments|(content|output)\[\d+\].*)|text\.format\.schema|background|"
    # /v1/images/generations: a size outside the sides the model takes, or disagreeing with width/height
    r"size|"
    # /v1/billing/checkout: a package the installation does not sell, an amount outside its bounds
    # (both are configuration, not the document's)
    r"package|amount_usd)$"
)
# Anthropic's envelope names no param: there, the same refusals are known by their messages.
SEMANTIC_MESSAGES = re.compile(
    r"^max_tokens is |^prompt is too long|tool_choice|[Ii]mage|budget_tokens|thinking|"
    # two tools of one name (a schema cannot say names are unique; Anthropic refuses them too)
    r"^Tool names must be unique|"
    r"^Send either 'package'"  # /v1/billing/checkout: a package or an amount, exactly one
)
# The server reads a body as JSON whatever its Content-Type says (curl -d sends form encoding):
# deliberate leniency, so these two coverage scenarios are not negative for this API.
LENIENT_SCENARIOS = {"malformed_content_type", "unsupported_content_type"}


@dataclass
class Outcome:
    case: Any
    response: requests.Response
    seconds: float

    @property
    def path(self) -> str:
        return self.case.path

    def describe(self) -> str:
        body = self.case.body if isinstance(self.case.body, dict | list | str | int | float | None) else "(none)"
        return (
            f"{self.case.method} {self.case.formatted_path} -> {self.response.status_code} "
            f"after {self.seconds:.1f}s\nsent: {json.dumps(body, ensure_ascii=False)[:2000]}\n"
            f"query: {self.case.query}\nanswer: {self.response.text[:2000]}"
        )


# ---- the document and the cases ------------------------------------------------------------------


@pytest.fixture(scope="module")
def document(lexora: RunningStack) -> dict[str, Any]:
    response = httpx.get(lexora.base_url.removesuffix("/v1") + "/openapi.json", timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200
    return response.json()


_GENERATED: dict[tuple[str, str], list[Any]] = {}


def generated(document: dict[str, Any], kind: str, path: str, method: str) -> list[Any]:
    """The cases for one operation, made once per document (both stacks serve the same one)."""
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    key = (digest, f"{kind} {method} {path}")
    if key not in _GENERATED:
        schema = schemathesis.openapi.from_dict(copy.deepcopy(document))
        schema.config.generation.update(with_security_parameters=False)  # the tests send a real key
        operation = schema[path][method]
        if kind == "coverage":
            cases = list(
                schema.iter_coverage_cases(
                    operation,
                    generation_modes=list(schemathesis.GenerationMode),
                    generation_config=schema.config.generation_for(operation=operation),
                )
            )
        else:
            mode = schemathesis.GenerationMode.POSITIVE if kind == "funded" else schemathesis.GenerationMode(kind)
            count = FUNDED_EXAMPLES if kind == "funded" else RANDOM_EXAMPLES
            cases = drawn(operation.as_strategy(generation_mode=mode), count)
        _GENERATED[key] = cases
    return _GENERATED[key]


def drawn(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    cases: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def collect(case: Any) -> None:
        cases.append(case)

    # A strategy may find no valid case at all (a DELETE whose only input is a path id the
    # document constrains): the coverage and negative cases still run.
    with contextlib.suppress(Unsatisfiable):
        collect()
    return cases


def with_real_model(case: Any, index: int) -> Any:
    """Two in three string model names become the served model (the third stays: 404 paths)."""
    body = case.body
    if case.method == "POST" and isinstance(body, dict) and isinstance(body.get("model"), str) and index % 3 < 2:
        body["model"] = REAL_MODELS_BY_PATH.get(case.path, REAL_MODELS)[index % 3]
    return case


def edge_cases(document: dict[str, Any], path: str) -> Iterator[Any]:
    schema = schemathesis.openapi.from_dict(copy.deepcopy(document))
    operation = schema[path]["POST"]
    messages = [{"role": "user", "content": "Hi"}]
    base: dict[str, Any] = {
        "/v1/completions": {"prompt": "Hi"},
        "/v1/responses": {"input": "Hi"},
        "/v1/embeddings": {"input": "Hi"},
        "/v1/images/generations": {"prompt": "Hi"},
    }.get(path, {"messages": messages})
    if path == "/v1/messages":
        base = {**base, "max_tokens": 2}
    for model in EDGE_MODEL_NAMES:
        yield operation.Case(body={**base, "model": model}, media_type="application/json")
    for text in ("\u0000", "\ud800 lone surrogate", "x" * 20_000):
        content = {
            "/v1/completions": {"prompt": text},
            "/v1/responses": {"input": text},
            "/v1/embeddings": {"input": text},
            "/v1/images/generations": {"prompt": text},
        }.get(path, {"messages": [{"role": "user", "content": text}]})
        model = REAL_MODELS_BY_PATH.get(path, REAL_MODELS)[0]
        yield operation.Case(body={**base, **content, "model": model}, media_type="application/json")


# ---- what every answer must satisfy ----------------------------------------------------------------


def call(case: Any, headers: dict[str, str], base_url: str, timeout: float = REQUEST_TIMEOUT_S) -> Outcome:
    started = time.monotonic()
    try:
        response = case.call(base_url=base_url, headers=headers, timeout=timeout)
    except requests.Timeout:
        body = json.dumps(case.body, ensure_ascii=False)[:2000] if isinstance(case.body, dict) else case.body
        pytest.fail(f"{case.method} {case.formatted_path}: no answer within {timeout}s; sent {body}")
    outcome = Outcome(case, response, time.monotonic() - started)
    by_design = BY_DESIGN_5XX.get(case.path)
    if by_design and response.status_code == by_design[0]:
        assert response.json()["error"]["type"] == by_design[1], outcome.describe()
    else:
        assert response.status_code < 500, outcome.describe()
    if response.status_code >= 400:
        assert_envelope(outcome)
    return outcome


def assert_envelope(outcome: Outcome) -> dict[str, Any]:
    try:
        body = outcome.response.json()
    except ValueError:
        pytest.fail(f"an error that is not JSON: {outcome.describe()}")
    if outcome.path in ANTHROPIC_PATHS:
        ok = isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error"
        error = body.get("error") if ok else None
        ok = ok and isinstance(error, dict) and set(error) == {"type", "message"}
    else:
        error = body.get("error") if isinstance(body, dict) and set(body) == {"error"} else None
        ok = isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
        ok = ok and (error["param"] is None or isinstance(error["param"], str)) and isinstance(error["code"], str)
    ok = ok and isinstance(error["type"], str) and isinstance(error["message"], str) and bool(error["message"])
    assert ok, f"not the route's error envelope: {outcome.describe()}"
    return error


# The server reads JSON strictly, as OpenAI does: an integer is a JSON integer, and 491.0 is a
# decimal number (JSON Schema would call it an integer).
ServerReading = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def body_validator(document: dict[str, Any], path: str) -> jsonschema.Validator:
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return ServerReading({**ref, "components": document["components"]})


def allowed(validator: jsonschema.Validator, body: Any) -> bool:
    """Whether the document allows the body. pydantic reads a Literal by value (0 is false, true
    is 1) and takes such a value as the literal itself: harmless, so not counted as a violation."""
    return all(
        error.validator in ("type", "const") and "const" in error.schema and error.instance == error.schema["const"]
        for error in validator.iter_errors(body)
    )


def scenario(case: Any) -> str | None:
    data = case.meta.phase.data if case.meta is not None else None
    value = getattr(data, "scenario", None)
    return getattr(value, "value", value)


def assert_body_verdict(outcome: Outcome, validator: jsonschema.Validator, accepted: tuple[int, ...] = ()) -> None:
    """The server refuses exactly what the document forbids (beyond what a schema can say)."""
    case, status = outcome.case, outcome.response.status_code
    if case.method != "POST" or scenario(case) in LENIENT_SCENARIOS:
        return
    sent = case.body if isinstance(case.body, dict | list | str | int | float | bool | None) else ...
    if sent is ... or not allowed(validator, sent):
        assert status == 400, f"a body the document forbids was not refused: {outcome.describe()}"
        return
    if status == 400:
        error = outcome.response.json()["error"]
        semantic = SEMANTIC_PARAMS.match(error["param"] or "") if "param" in error else None
        semantic = semantic or (not error.get("param") and SEMANTIC_MESSAGES.search(error["message"]))
        assert semantic, f"a body the document allows was refused: {outcome.describe()}"
    else:
        assert status in (200, 402, 404, *accepted), outcome.describe()


def assert_rejects_negative_query(outcome: Outcome) -> None:
    case = outcome.case
    if case.meta is None or not case.meta.generation.mode.is_negative:
        return
    case.validate_response(SchemathesisResponse.from_any(outcome.response), checks=[negative_data_rejection])


# ---- the tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broke(lexora: RunningStack) -> dict[str, str]:
    """An account without credit: bodies the server accepts stop at 402, after all validation."""
    return {"Authorization": f"Bearer {lexora.create_account(credits_micro=0).api_key}"}


@pytest.fixture
def quiet_logs(lexora: RunningStack) -> Iterator[None]:
    """No service logs an error while the fuzz runs (a poisoned usage event, an engine fault...)."""
    logs = [p.log_path for p in lexora.processes.values()]
    sizes = {path: path.stat().st_size if path.exists() else 0 for path in logs}
    yield
    errors = [line for path in logs for line in new_lines(path, sizes[path]) if '"level": "error"' in line]
    assert not errors, "services logged errors during the fuzz:\n" + "\n".join(e[:1500] for e in errors[:3])


def new_lines(path: Path, offset: int) -> list[str]:
    if not path.exists():
        return []
    with path.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace").splitlines()


@pytest.mark.parametrize("path", BODY_PATHS)
def test_request_bodies(
    lexora: RunningStack, document: dict[str, Any], broke: dict[str, str], path: str, quiet_logs: None
) -> None:
    validator = body_validator(document, path)
    cases = [
        *generated(document, "coverage", path, "POST"),
        *generated(document, "positive", path, "POST"),
        *generated(document, "negative", path, "POST"),
    ]
    statuses: dict[int, int] = {}
    refusals: list[str] = []  # what a schema-valid body with a served model was refused for
    for index, case in enumerate(cases):
        outcome = call(with_real_model(case, index), broke, lexora.base_url.removesuffix("/v1"))
        assert_body_verdict(outcome, validator)
        statuses[outcome.response.status_code] = statuses.get(outcome.response.status_code, 0) + 1
        if outcome.response.status_code == 400 and validator.is_valid(case.body) and index % 3 < 2:
            refusals.append(outcome.describe())
    for case in edge_cases(document, path):
        call(case, broke, lexora.base_url.removesuffix("/v1"))
    # The fuzz reached past validation: bodies were accepted, and refused for both reasons.
    accepted = statuses.get(402, 0) + statuses.get(200, 0)
    assert accepted and statuses.get(400) and statuses.get(404), f"{statuses}\n" + "\n".join(refusals[:5])


@pytest.mark.parametrize("path", GET_PATHS)
def test_get_routes(
    lexora: RunningStack, document: dict[str, Any], broke: dict[str, str], path: str, quiet_logs: None
) -> None:
    cases = [*generated(document, "coverage", path, "GET"), *generated(document, "positive", path, "GET")]
    if any(p["in"] == "query" for p in document["paths"][path]["get"].get("parameters", [])):
        cases += generated(document, "negative", path, "GET")
    base_url = lexora.base_url.removesuffix("/v1")
    for case in cases:
        if path == "/v1/models/{model_id}" and case.path_parameters.get("model_id") == "0":
            case.path_parameters["model_id"] = LOCAL_CHAT_MODEL
        outcome = call(case, broke, base_url)
        assert_rejects_negative_query(outcome)
        if case.method == "GET" and (case.meta is None or case.meta.generation.mode.is_positive):
            status = outcome.response.status_code
            # A date range can be valid field by field and still end before it starts.
            backwards = status == 400 and outcome.response.json()["error"]["param"] == "end_date"
            # An ordinary key may not read another account's transactions (only an admin's may).
            other = status == 403 and (case.query or {}).get("account_id") not in (None, "")
            forbidden = status == 403 and (path.startswith(ADMIN_PREFIX) or path in SESSION_OR_ADMIN)
            assert status in (200, 404) or backwards or other or forbidden, outcome.describe()


@pytest.mark.parametrize(("method", "path"), OTHER_OPERATIONS)
def test_other_operations(
    lexora: RunningStack, document: dict[str, Any], broke: dict[str, str], method: str, path: str, quiet_logs: None
) -> None:
    cases = [
        *generated(document, "coverage", path, method),
        *generated(document, "positive", path, method),
        *generated(document, "negative", path, method),
    ]
    base_url = lexora.base_url.removesuffix("/v1")
    statuses = set()
    for case in cases:
        outcome = call(case, broke, base_url)
        assert_rejects_negative_query(outcome)
        if path == "/v1/billing/checkout":
            assert_body_verdict(outcome, body_validator(document, path), accepted=(502,))
        statuses.add(outcome.response.status_code)
    assert statuses - {400, 422}, f"nothing got past validation: {statuses}"


def test_every_operation_of_the_document_is_fuzzed(document: dict[str, Any]) -> None:
    fuzzed = {("POST", p) for p in BODY_PATHS} | {("GET", p) for p in GET_PATHS} | set(OTHER_OPERATIONS)
    served = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert served == fuzzed, f"not fuzzed: {sorted(served - fuzzed)}; gone: {sorted(fuzzed - served)}"


@pytest.mark.parametrize("path", GENERATION_PATHS)
def test_funded_bodies_run_on_the_engine(
    lexora: RunningStack, document: dict[str, Any], path: str, quiet_logs: None
) -> None:
    """Valid bodies on the served model, with credit: they run on the engine, a few tokens each."""
    account = lexora.create_account()
    headers = {"Authorization": f"Bearer {account.api_key}"}
    answered = 0
    for case in generated(document, "funded", path, "POST"):
        body = copy.deepcopy(case.body)
        body["model"] = LOCAL_CHAT_MODEL
        if isinstance(body.get("prompt"), list):
            body["prompt"] = body["prompt"][:2]  # one job per prompt: keep the engine's work small
        body["max_tokens"] = min(body.get("max_tokens") or FUNDED_MAX_TOKENS, FUNDED_MAX_TOKENS)
        if path == "/v1/responses":
            runnable_response(body)
        if body.get("max_completion_tokens") is not None:
            body["max_completion_tokens"] = min(body["max_completion_tokens"], FUNDED_MAX_TOKENS)
        case.body = body
        outcome = call(case, headers, lexora.base_url.removesuffix("/v1"), FUNDED_TIMEOUT_S)
        if outcome.response.status_code == 200:
            answered += 1
            assert_generated(outcome)
        else:
            assert_body_verdict(outcome, body_validator(document, path))
    assert answered, "no funded body reached the engine"
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0 and balance.exact_balance_pico < 5_000_000 * 10**6, "the answers were charged"


def runnable_response(body: dict[str, Any]) -> None:
    """A drawn /v1/responses body made to run: a few tokens, a text input (drawn items are checked
    by the unfunded fuzz), no stored response to continue, nothing refused for what a schema cannot
    say (a forced hosted tool, a background response)."""
    body["max_output_tokens"] = min(body.get("max_output_tokens") or FUNDED_MAX_TOKENS, FUNDED_MAX_TOKENS)
    if not isinstance(body.get("input"), str) or not body["input"]:
        body["input"] = "Hi"
    body.pop("previous_response_id", None)
    body.pop("background", None)
    body.pop("text", None)
    if isinstance(body.get("tool_choice"), dict) or body.get("tool_choice") == "required":
        body.pop("tool_choice")


def assert_generated(outcome: Outcome) -> None:
    text = outcome.response.text
    if outcome.case.body.get("stream") and outcome.path == "/v1/responses":
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        assert events and events[-1]["type"] in ("response.completed", "response.incomplete"), outcome.describe()
        return
    if outcome.case.body.get("stream"):
        events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
        assert events and all('"error"' not in e for e in events), outcome.describe()
        if outcome.path != "/v1/messages":
            assert events[-1] == "[DONE]", outcome.describe()
        return
    answer = outcome.response.json()
    usage = answer["usage"]
    produced = usage.get("completion_tokens", usage.get("output_tokens"))
    choices = len(answer.get("choices", [None]))  # a list of prompts is one choice (and job) each
    assert 0 <= produced <= FUNDED_MAX_TOKENS * choices and math.isfinite(usage["cost"]), outcome.describe()
