"""Several prompts in one legacy completion: validation, and the interleaved stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lexora_contracts.errors import InvalidRequest, JobTimeout
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.openai import completion_batch
from lexora_gateway.openai.schemas import CompletionRequest


def body(prompt: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": prompt})


def test_one_text_prompt_takes_the_plain_route() -> None:
    assert completion_batch.is_single(body("a")) and completion_batch.is_single(body(["a"]))
    assert not completion_batch.is_single(body(["a", "b"]))
    assert not completion_batch.is_single(body([1, 2])), "token ids are answered by the batch's clear 400"


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2], [3]], [7]])
def test_token_id_prompts_are_refused_clearly(prompt: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        completion_batch.prompt_list(body(prompt), 16)
    assert caught.value.param == "prompt" and "token ids" in caught.value.message


def test_the_number_of_prompts_is_capped() -> None:
    assert completion_batch.prompt_list(body(["a"] * 3), 3) == ["a"] * 3
    with pytest.raises(InvalidRequest) as caught:
        completion_batch.prompt_list(body(["a"] * 4), 3)
    assert caught.value.param == "prompt" and "At most 3 prompts" in caught.value.message


class FakeStream:
    def __init__(self, chunks: list[GenerationChunk | Exception], delay: float):
        self._chunks, self._delay = chunks, delay
        self.released = False

    async def next(self) -> GenerationChunk:
        await asyncio.sleep(self._delay)
        chunk = self._chunks.pop(0)
        if isinstance(chunk, Exception):
            raise chunk
        return chunk

    async def release(self) -> None:
        self.released = True


def run(words: list[str], delay: float, cost: int, fail: Exception | None = None) -> tuple[Any, GenerationChunk]:
    deltas: list[GenerationChunk | Exception] = [GenerationChunk(kind="delta", text=w) for w in words]
    end = fail or GenerationChunk(
        kind="done", prompt_tokens=3, completion_tokens=len(words), finish_reason="length", cost_pico=cost
    )
    stream = FakeStream([*deltas[1:], end], delay)
    return stream, deltas[0]  # type: ignore[return-value]


def events(raw: list[bytes]) -> list[Any]:
    lines = [line[6:] for part in raw for line in part.decode().split("\n") if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


async def test_stream_interleaves_choices_and_ends_once_with_summed_usage() -> None:
    runs = [run(["a1", "a2", "a3"], 0.003, 10), run(["b1", "b2"], 0.002, 20)]
    sse = completion_batch._sse(runs, "cmpl-x", "m", 1, include_usage=True)  # type: ignore[arg-type]
    got = events([part async for part in sse])
    assert got[-1] == "[DONE]" and got.count("[DONE]") == 1
    texts: dict[int, str] = {0: "", 1: ""}
    for event in got[:-2]:
        [choice] = event["choices"]
        texts[choice["index"]] += choice["text"]
    assert texts == {0: "a1a2a3", 1: "b1b2"}
    finishes = [e["choices"][0] for e in got[:-2] if e["choices"][0]["finish_reason"]]
    assert sorted(c["index"] for c in finishes) == [0, 1]
    usage = got[-2]["usage"]
    assert got[-2]["choices"] == [] and (usage["prompt_tokens"], usage["completion_tokens"]) == (6, 5)
    assert usage["cost"] == pytest.approx(30e-12)
    assert all(stream.released for stream, _ in runs)


async def test_a_failing_prompt_ends_the_stream_with_its_error_and_stops_the_others() -> None:
    runs = [run(["a1"] * 50, 0.01, 10), run(["b1", "b2"], 0.001, 20, fail=JobTimeout("too slow"))]
    sse = completion_batch._sse(runs, "cmpl-x", "m", 1, include_usage=False)  # type: ignore[arg-type]
    got = events([part async for part in sse])
    assert got[-1]["error"]["code"] == "timeout" and "[DONE]" not in got
    assert all(stream.released for stream, _ in runs), "the other prompt's engine is stopped"


async def test_all_or_first_error_cancels_the_rest() -> None:
    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def failing() -> int:
        await asyncio.sleep(0.01)
        raise JobTimeout("late")

    with pytest.raises(JobTimeout):
        await completion_batch._all_or_first_error([slow(), failing()])
    assert cancelled.is_set()

    async def value(v: int) -> int:
        return v

    assert await completion_batch._all_or_first_error([value(1), value(2)]) == [1, 2]
