"""Bounded load on loopback: a few client threads, each sending requests one after another from
several accounts through the real OpenAI SDK (calls and streams), or raw httpx streams that hang
up after a random number of deltas. Every request's outcome is kept for the books."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx
import openai

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import LONG_JOB, Account

Kind = Literal["call", "stream", "hangup"]
PROMPT = [{"role": "user", "content": "Say hello to a friend in one short sentence."}]
# What a client that failed waits before its next request: it keeps the load bounded while a
# service is down, and fine enough to time the recovery.
FAILURE_PAUSE_S = 0.25
CLIENT_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """One request as its client saw it. `status`: the HTTP status (200 for a stream that ended with
    an error event too; see `error`), or 0 when no HTTP answer came (connection refused or cut)."""

    kind: Kind
    account_id: str
    started: float
    ended: float
    status: int
    request_id: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    deltas: int = 0  # content deltas a stream received (a hangup's: before it hung up)
    max_tokens: int = 0

    @property
    def served(self) -> bool:
        """Answered in full: a completion with its usage, or a stream that ended with [DONE]."""
        return self.kind != "hangup" and self.status == 200 and self.error is None

    @property
    def failed(self) -> bool:
        return not self.served and not (self.kind == "hangup" and self.status == 200 and self.error is None)

    @property
    def failure(self) -> str:
        """How it failed, for the report: the status (and error type), or the connection error."""
        if self.status == 0:
            return f"no answer ({self.error})"
        return f"{self.status} {self.error}" if self.error else str(self.status)


@dataclass
class LoadShape:
    clients: int = 4
    stream_share: float = 0.4
    hangup_share: float = 0.0
    call_max_tokens: int = 6
    stream_max_tokens: int = 10
    hangup_max_tokens: int = 400


@dataclass
class Load:
    """Start it, inject a fault, stop it: `stop()` waits for the requests in flight and returns
    every outcome."""

    base_url: str
    accounts: list[Account]
    shape: LoadShape = field(default_factory=LoadShape)
    seed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running_since: dict[int, float] = field(default_factory=dict)  # client -> its request's start

    def start(self) -> Load:
        for n in range(self.shape.clients):
            thread = threading.Thread(target=self._client, args=(n,), name=f"load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_S + 30)
        with self._lock:
            return list(self.outcomes)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def oldest_in_flight(self) -> float | None:
        """When the oldest request still unanswered began (None: none is)."""
        with self._lock:
            return min(self._running_since.values(), default=None)

    def _client(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        sdk = {
            a.account_id: openai.OpenAI(
                base_url=self.base_url, api_key=a.api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S
            )
            for a in self.accounts
        }
        turn = n
        while not self._stop.is_set():
            account = self.accounts[turn % len(self.accounts)]
            turn += 1
            draw = rng.random()
            with self._lock:
                self._running_since[n] = time.time()
            if draw < self.shape.hangup_share:
                outcome = hang_up(self.base_url, account, rng.randint(1, 30), self.shape.hangup_max_tokens)
            elif draw < self.shape.hangup_share + self.shape.stream_share:
                outcome = stream(sdk[account.account_id], account, self.shape.stream_max_tokens)
            else:
                outcome = call(sdk[account.account_id], account, self.shape.call_max_tokens)
            with self._lock:
                self.outcomes.append(outcome)
                del self._running_since[n]
            if outcome.failed:
                self._stop.wait(FAILURE_PAUSE_S)


def call(client: openai.OpenAI, account: Account, max_tokens: int) -> Outcome:
    started = time.time()
    outcome = Outcome("call", account.account_id, started, started, 0, max_tokens=max_tokens)
    try:
        reply = client.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=PROMPT, max_tokens=max_tokens)  # type: ignore[arg-type]
    except openai.APIStatusError as exc:
        outcome.status, outcome.error = exc.status_code, _error_type(exc.body)
    except openai.APIConnectionError as exc:
        outcome.error = type(exc.__cause__ or exc).__name__
    else:
        outcome.status, outcome.request_id = 200, reply.id
        assert reply.usage is not None
        outcome.prompt_tokens, outcome.completion_tokens = reply.usage.prompt_tokens, reply.usage.completion_tokens
    outcome.ended = time.time()
    return outcome


def stream(client: openai.OpenAI, account: Account, max_tokens: int) -> Outcome:
    started = time.time()
    outcome = Outcome("stream", account.account_id, started, started, 0, max_tokens=max_tokens)
    try:
        chunks = client.chat.completions.create(
            model=LOCAL_CHAT_MODEL,
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        outcome.status = 200
        for chunk in chunks:
            outcome.request_id = chunk.id
            if chunk.choices and chunk.choices[0].delta.content:
                outcome.deltas += 1
            if chunk.usage is not None:
                outcome.prompt_tokens = chunk.usage.prompt_tokens
                outcome.completion_tokens = chunk.usage.completion_tokens
        if outcome.completion_tokens is None:
            outcome.error = "stream ended without usage"
    except openai.APIStatusError as exc:
        outcome.status, outcome.error = exc.status_code, _error_type(exc.body)
    except openai.APIError as exc:  # an error event once the stream had started
        outcome.error = _error_type(exc.body) or type(exc).__name__
    except (openai.APIConnectionError, httpx.HTTPError) as exc:
        outcome.error = type(exc).__name__
    outcome.ended = time.time()
    return outcome


def hang_up(base_url: str, account: Account, after_deltas: int, max_tokens: int) -> Outcome:
    """A raw streaming request whose client goes away after `after_deltas` content deltas."""
    started = time.time()
    outcome = Outcome("hangup", account.account_id, started, started, 0, max_tokens=max_tokens)
    body = {"model": LOCAL_CHAT_MODEL, "messages": LONG_JOB, "max_tokens": max_tokens, "stream": True}
    headers = {"Authorization": f"Bearer {account.api_key}"}
    try:
        with httpx.stream(
            "POST", f"{base_url}/chat/completions", json=body, headers=headers, timeout=CLIENT_TIMEOUT_S
        ) as response:
            outcome.status = response.status_code
            if response.status_code != 200:
                response.read()
                outcome.error = _error_type(response.json())
            else:
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        outcome.error = event["error"].get("type")
                        break
                    outcome.request_id = event["id"]
                    if event["choices"] and event["choices"][0]["delta"].get("content"):
                        outcome.deltas += 1
                        if outcome.deltas >= after_deltas:
                            break  # hang up: the connection closes as the block exits
    except httpx.HTTPError as exc:
        outcome.error = type(exc).__name__
    outcome.ended = time.time()
    return outcome


def _error_type(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("type") or inner.get("code")
    return None
