"""LiteLLM as a client: `litellm.completion(model="openai/<id>", api_base=<gateway>/v1, api_key=<key>)`.

LiteLLM 1.106.2 pins openai<3, below the project's, so it lives in its own virtualenv
(.venv/litellm-client, made by scripts/bootstrap.sh) and runs there as a small JSON-lines server:
one request per line in, LiteLLM's answer (or the exception it raised) per line out. Everything it
does runs offline: the cost map is its bundled copy, and an audit hook in that process refuses (and
records) any connection or name lookup beyond loopback.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

REPO = Path(__file__).resolve().parents[2]
LITELLM_PYTHON = REPO / ".venv" / "litellm-client" / "bin" / "python"
MODEL = f"openai/{LOCAL_CHAT_MODEL}"
CALL_TIMEOUT_S = 120  # LiteLLM's own request timeout is 60 s; this catches a client that hangs
MARK = "@@litellm@@ "
GRANT_MICRO = 5_000_000
POEM = [{"role": "user", "content": "Write a poem about the sea."}]
CITIES = ["Paris", "Rome", "Tokyo"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": CITIES}},
            "required": ["city"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]

DRIVER = r"""
import asyncio, json, socket, sys

MARK = "@@litellm@@ "
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
attempts = []


def guard(event, args):
    # Only the gateway, on loopback, may be reached: anything else is refused and remembered.
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            attempts.append(f"connect {address[0]}:{address[1]}")
            raise OSError(f"network access beyond loopback: {address}")
    elif event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if host is not None and host not in LOOPBACK:
            attempts.append(f"resolve {host}")
            raise socket.gaierror(f"name lookup beyond loopback: {host}")


sys.addaudithook(guard)
import litellm  # noqa: E402  (after the guard: its import must not reach out either)

litellm.suppress_debug_info = True


def dump(obj):
    return json.loads(obj.model_dump_json())


def run(op, kwargs):
    if op == "attempts":
        return {"attempts": attempts}
    if op == "completion":
        return {"response": dump(litellm.completion(**kwargs))}
    if op == "acompletion":
        return {"response": dump(asyncio.run(litellm.acompletion(**kwargs)))}
    if op == "stream":
        chunks = list(litellm.completion(stream=True, **kwargs))
        built = litellm.stream_chunk_builder(chunks, messages=kwargs.get("messages"))
        return {"chunks": [dump(c) for c in chunks], "response": dump(built)}
    raise ValueError(op)


print(MARK + json.dumps({"ready": litellm.__name__}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    try:
        answer = run(request["op"], request.get("kwargs", {}))
    except Exception as exc:
        answer = {
            "error": {
                "class": type(exc).__name__,
                "classes": [f"{c.__module__}.{c.__name__}" for c in type(exc).__mro__],
                "status_code": getattr(exc, "status_code", None),
                "message": str(exc)[:2000],
            }
        }
    print(MARK + json.dumps(answer), flush=True)
"""


class LiteLLMFailed(Exception):
    def __init__(self, error: dict[str, Any]):
        super().__init__(f"{error['class']} ({error['status_code']}): {error['message']}")
        self.cls, self.classes, self.status_code = error["class"], error["classes"], error["status_code"]
        self.message = error["message"]


class LiteLLM:
    """The LiteLLM process: `completion`, `acompletion` and `stream` take litellm.completion's arguments."""

    def __init__(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it fetches the cost map at import
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            [str(LITELLM_PYTHON), "-c", DRIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self._answer()  # ready: LiteLLM imported

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(MARK):
                self.lines.put(line.removeprefix(MARK))
            else:
                self.output.append(line)

    def _answer(self) -> dict[str, Any]:
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            try:
                return json.loads(self.lines.get(timeout=1))
            except queue.Empty:
                if self.process.poll() is not None:
                    pytest.fail(f"LiteLLM's process exited ({self.process.returncode}):\n{self.tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"LiteLLM gave no answer within {CALL_TIMEOUT_S}s:\n{self.tail()}")

    def tail(self) -> str:
        return "".join(self.output[-40:])

    def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "kwargs": kwargs}) + "\n")
        self.process.stdin.flush()
        answer = self._answer()
        if "error" in answer:
            raise LiteLLMFailed(answer["error"])
        return answer

    def completion(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("completion", **kwargs)["response"]

    def acompletion(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("acompletion", **kwargs)["response"]

    def stream(self, **kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        answer = self._call("stream", **kwargs)
        return answer["chunks"], answer["response"]

    def network_attempts(self) -> list[str]:
        return self._call("attempts")["attempts"]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def litellm() -> Iterator[LiteLLM]:
    if not LITELLM_PYTHON.exists():
        pytest.fail(f"{LITELLM_PYTHON} is missing: run scripts/bootstrap.sh (it makes LiteLLM's virtualenv)")
    client = LiteLLM()
    yield client
    client.close()


def gateway(lexora: RunningStack, api_key: str, **kwargs: Any) -> dict[str, Any]:
    """litellm.completion's arguments for this gateway: an OpenAI-compatible base URL and a key."""
    return {"model": MODEL, "api_base": lexora.base_url, "api_key": api_key, "max_retries": 0, "timeout": 60, **kwargs}


def text_of(response: dict[str, Any]) -> str:
    return response["choices"][0]["message"]["content"]


def test_completion_returns_the_answer_its_usage_and_is_charged(lexora: RunningStack, litellm: LiteLLM) -> None:
    account = lexora.create_account(credits_micro=GRANT_MICRO)
    response = litellm.completion(
        **gateway(lexora, account.api_key, messages=POEM, max_tokens=12, temperature=0, seed=7)
    )
    assert response["object"] == "chat.completion" and response["model"] == LOCAL_CHAT_MODEL
    assert response["id"].startswith("chatcmpl-")
    assert text_of(response).strip() and response["choices"][0]["finish_reason"] in ("stop", "length")
    usage = response["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The bill: one usage row with LiteLLM's token counts, and exactly its cost off the balance.
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert row["cost_pico"] > 0 and usage["cost"] == pytest.approx(row["cost_pico"] / 10**12)
    balance = lexora.settled_balance(account.account_id)
    assert balance.exact_balance_pico == GRANT_MICRO * 10**6 - row["cost_pico"] and balance.held_micro == 0


def test_async_completion_stops_at_max_tokens(lexora: RunningStack, litellm: LiteLLM) -> None:
    account = lexora.create_account()
    response = litellm.acompletion(**gateway(lexora, account.api_key, messages=POEM, max_tokens=5))
    assert response["usage"]["completion_tokens"] == 5
    assert response["choices"][0]["finish_reason"] == "length" and text_of(response)


def test_streamed_deltas_assemble_to_the_unstreamed_answer(lexora: RunningStack, litellm: LiteLLM) -> None:
    account = lexora.create_account()
    args = gateway(lexora, account.api_key, messages=POEM, max_tokens=16, temperature=0)
    whole = litellm.completion(**args)
    chunks, built = litellm.stream(**args, stream_options={"include_usage": True})
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert len([d for d in deltas if d]) > 1, "the answer came in several deltas"
    assert "".join(deltas) == text_of(whole) == text_of(built)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == [
        whole["choices"][0]["finish_reason"]
    ]
    assert built["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"] > 0
    assert built["usage"]["prompt_tokens"] == whole["usage"]["prompt_tokens"] > 0


def test_seed_temperature_and_stop_reach_the_engine(lexora: RunningStack, litellm: LiteLLM) -> None:
    account = lexora.create_account()
    sampled = gateway(lexora, account.api_key, messages=POEM, max_tokens=10, temperature=1.2, seed=42)
    assert text_of(litellm.completion(**sampled)) == text_of(litellm.completion(**sampled))
    greedy = gateway(lexora, account.api_key, messages=POEM, max_tokens=24, temperature=0)
    full = text_of(litellm.completion(**greedy))
    word = full.split()[3]
    for stop in (word, ["never-there", word]):
        stopped = litellm.completion(**greedy, stop=stop)
        assert text_of(stopped) == full[: full.index(word)]
        assert stopped["choices"][0]["finish_reason"] == "stop"


def test_forced_tool_call_comes_back_as_tool_calls(lexora: RunningStack, litellm: LiteLLM) -> None:
    account = lexora.create_account()
    args = gateway(
        lexora,
        account.api_key,
        messages=ASK_WEATHER,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        temperature=0,
    )
    response = litellm.completion(**args)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and not choice["message"]["content"]
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"] in CITIES
    assert response["usage"]["completion_tokens"] > 0
    # Streamed, LiteLLM rebuilds the same call from the deltas.
    chunks, built = litellm.stream(**args)
    [streamed] = built["choices"][0]["message"]["tool_calls"]
    assert streamed["function"]["name"] == "get_weather"
    assert json.loads(streamed["function"]["arguments"]) == json.loads(call["function"]["arguments"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_error_statuses_become_litellm_exceptions(lexora: RunningStack, litellm: LiteLLM) -> None:
    funded, broke = lexora.create_account(), lexora.create_account(credits_micro=0)
    hello = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    cases = [
        ("sk-lexora-not-a-real-key", MODEL, {}, "AuthenticationError", 401, "Invalid"),
        (broke.api_key, MODEL, {}, "APIError", 402, "Insufficient balance"),
        (funded.api_key, "openai/no/such-model", {}, "NotFoundError", 404, "does not exist"),
        (funded.api_key, MODEL, {"temperature": 3}, "BadRequestError", 400, "temperature"),
        (funded.api_key, "openai/meta-llama/Llama-3.2-3B-Instruct", {}, "ServiceUnavailableError", 503, "retry"),
    ]
    for key, model, extra, cls, status, words in cases:
        with pytest.raises(LiteLLMFailed) as caught:
            litellm.completion(**{**gateway(lexora, key, **hello, **extra), "model": model})
        assert (caught.value.cls, caught.value.status_code) == (cls, status), caught.value
        assert f"litellm.exceptions.{cls}" in caught.value.classes and words in caught.value.message
    assert lexora.settled_balance(funded.account_id).balance_micro == GRANT_MICRO, "no failure was charged"


def test_rate_limit_is_a_litellm_rate_limit_error(lexora: RunningStack, litellm: LiteLLM) -> None:
    """A free-plan key without credit: each request counts (10 a minute), is refused 402, until 429.
    Up to 21 requests, so a run that straddles the minute's end still meets the limit."""
    account = lexora.create_account(credits_micro=0, plan="free")
    refused = []
    for _ in range(21):
        with pytest.raises(LiteLLMFailed) as caught:
            litellm.completion(**gateway(lexora, account.api_key, messages=POEM, max_tokens=4))
        refused.append(caught.value.status_code)
        if caught.value.status_code == 429:
            break
    assert refused[-1] == 429 and set(refused[:-1]) == {402} and len(refused) >= 11, refused
    assert caught.value.cls == "RateLimitError" and "litellm.exceptions.RateLimitError" in caught.value.classes


def test_litellm_reached_nothing_beyond_loopback(litellm: LiteLLM) -> None:
    assert litellm.network_attempts() == []
