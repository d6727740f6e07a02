"""What the gateway run measures and how long: its settings (from BENCH_* variables, which the
command line's options set too) and the workload every target gets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

INSTANT_MODEL = "bench/instant-echo"  # the registry id the stack serves instant-echo under
INSTANT_TRITON = "instant-echo"
# $1 per 1M tokens, input and output: every request costs something, so billing is exercised.
INSTANT_PRICE_MICRO_PER_MTOK = 1_000_000
ACCOUNT_CREDIT_MICRO = 1_000_000_000  # $1,000 each: no benchmark request is ever refused for credit
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
E2E_MESSAGES = [{"role": "user", "content": "Write a very long and detailed story about a dragon and a knight."}]
FIRST_TOKEN = "Hello"  # instant-echo's first token: its first appearance in a body is the first token


SECTIONS = ("sweep", "rate", "rate_stream", "hops", "memory", "billing", "e2e", "profile")
# The open-loop sections send requests at this share of LiteLLM's peak rate in their mode (rate:
# non-streaming, rate_stream: streaming): the load where LiteLLM saturates. Some runs it is already
# more than LiteLLM sustains at a fixed rate (its queue grows), which the report then shows.
OPEN_LOOP_SHARE = 0.9
OPEN_LOOP_MAX_IN_FLIGHT = 64


@dataclass
class Settings:
    quick: bool
    levels: list[int]
    duration: int
    warmup: int
    workers: list[int]
    max_tokens: int
    billing_accounts: int
    billing_concurrency: int
    billing_duration: int
    memory_requests: int
    memory_concurrency: int
    e2e_max_tokens: int
    e2e_reps: int
    e2e_budget_s: int
    hops_n: int
    profile: bool
    profile_duration: int
    pg_fsync: bool
    litellm_db: bool
    sections: list[str]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        quick = env.get("BENCH_QUICK", "") not in ("", "0")

        def ints(name: str, default: str) -> list[int]:
            return [int(x) for x in env.get(name, default).split(",") if x.strip()]

        return cls(
            quick=quick,
            levels=ints("BENCH_LEVELS", "1,4,16" if quick else "1,2,4,8,16,32,64"),
            duration=int(env.get("BENCH_DURATION", "4" if quick else "12")),
            warmup=1 if quick else 3,
            workers=ints("BENCH_WORKERS", "1" if quick else "1,2"),
            max_tokens=16,
            billing_accounts=50 if quick else 500,
            billing_concurrency=16,
            billing_duration=4 if quick else 12,
            memory_requests=int(env.get("BENCH_MEMORY_REQUESTS", "10000" if quick else "100000")),
            memory_concurrency=16,
            e2e_max_tokens=64 if quick else 128,
            e2e_reps=3 if quick else 5,
            e2e_budget_s=45 if quick else 240,
            hops_n=150 if quick else 1000,
            profile=env.get("BENCH_PROFILE", "0" if quick else "1") not in ("", "0"),
            profile_duration=8 if quick else 15,
            pg_fsync=env.get("BENCH_PG_FSYNC", "on") != "off",
            litellm_db=env.get("BENCH_LITELLM_DB", "0") not in ("", "0"),
            sections=env.get("BENCH_SECTIONS", ",".join(SECTIONS)).split(","),
        )
