"""The router's streams to a real tritonserver: short single answers multiplexed on one shared gRPC
call, each answered with its own outputs, or over HTTP `generate`; requests of streaming clients
over HTTP `generate_stream`; streaming and long single answers on gRPC calls of their own where
they must be cancellable alone."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_contracts.registry import Endpoint, Pricing
from lexora_dev.processes import free_port
from lexora_dev.stack import start_triton
from lexora_router.triton_engine import (
    SHORT_ANSWER_TOKENS,
    EngineRejected,
    EngineUnreachable,
    TritonEngine,
    _chat_inputs,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = "instant-echo"  # answers at once with max_tokens "tokens": the streams are all that is tested
SLOW_MODEL = "smollm2-135m-instruct"  # real generation, one request at a time


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, Path]]:
    """(its endpoint, log file) of a tritonserver serving the two models."""
    state = tmp_path_factory.mktemp("triton")
    repo = state / "models"
    repo.mkdir()
    for name in (MODEL, SLOW_MODEL):
        (repo / name).symlink_to(ROOT / "model-repo" / name)
    process, endpoint = start_triton(state, model_repo=repo, timeout=120)
    try:
        yield endpoint, process.log_path
    finally:
        process.stop()


@pytest.fixture(scope="module")
def triton(triton_server: tuple[Endpoint, Path]) -> str:
    """The gRPC address."""
    return triton_server[0].grpc_address


@pytest.fixture(scope="module")
def endpoint(triton_server: tuple[Endpoint, Path]) -> Endpoint:
    return triton_server[0]


@pytest.fixture
async def engine() -> AsyncIterator[TritonEngine]:
    engine = TritonEngine()
    yield engine
    await engine.close()


def request(
    max_tokens: int, stream: bool = False, request_id: str = "r", prompt: str = "Say hello"
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        account_id="a",
        key_id="k",
        model="m",
        messages=[ChatTurn(role="user", content=prompt)],
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        stream=stream,
        deadline=time.time() + 60,
        pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
        reserved_micro=0,
        received_at=time.time(),
    )


async def outputs(engine: TritonEngine, address: str, job: GenerationRequest) -> list:
    return [output async for output in engine.generate(address, MODEL, job)]


async def test_concurrent_requests_on_the_shared_call_each_get_their_own_answer(
    triton: str, engine: TritonEngine
) -> None:
    answers = await asyncio.gather(*(outputs(engine, triton, request(n, request_id=f"r{n}")) for n in range(1, 41)))
    for n, answer in enumerate(answers, start=1):
        assert len(answer) == 1  # not streaming: one response with the whole answer
        assert answer[0].completion_tokens == n and answer[0].finish_reason == "length"
    assert len(engine._endpoint_streams) == 1 and engine._endpoint_streams[triton]._shared is not None


async def test_an_engine_error_fails_only_its_own_request(triton: str, engine: TritonEngine) -> None:
    async def refused() -> None:
        async for _ in engine._stream(triton, MODEL, _chat_inputs(request(1).messages, -1), "bad", own_call=False):
            pass

    results = await asyncio.gather(
        refused(), *(outputs(engine, triton, request(4)) for _ in range(8)), return_exceptions=True
    )
    assert isinstance(results[0], EngineRejected) and "max_tokens" in str(results[0])
    assert all(isinstance(r, list) and r[-1].completion_tokens == 4 for r in results[1:])


async def test_a_model_the_endpoint_does_not_serve_is_unreachable_there(triton: str, engine: TritonEngine) -> None:
    with pytest.raises(EngineUnreachable, match="not loaded"):
        async for _ in engine.generate(triton, "no-such-model", request(2)):
            pass


async def test_the_shared_call_is_opened_again_after_it_ends(triton: str, engine: TritonEngine) -> None:
    await outputs(engine, triton, request(2))
    streams = engine._endpoint_streams[triton]
    first = streams._shared
    assert first is not None
    first.call.cancel()
    assert first.reader is not None
    await asyncio.wait_for(asyncio.gather(first.reader, return_exceptions=True), 5)
    answer = await outputs(engine, triton, request(3))
    assert answer[-1].completion_tokens == 3 and streams._shared is not first


async def test_a_streaming_request_gets_a_response_per_token_on_a_call_of_its_own(
    triton: str, engine: TritonEngine
) -> None:
    answer = await outputs(engine, triton, request(5, stream=True))
    assert [o.completion_tokens for o in answer if o.text] == [1, 2, 3, 4, 5]
    assert answer[-1].finish_reason == "length"
    assert triton not in engine._endpoint_streams or engine._endpoint_streams[triton]._shared is None


async def test_a_streaming_request_stopped_early_cancels_its_call(triton: str, engine: TritonEngine) -> None:
    generation = engine.generate(triton, MODEL, request(1000, stream=True))
    first = await anext(generation)
    await generation.aclose()
    assert first.completion_tokens == 1
    # The endpoint still answers: a cancelled call does not disturb the next one.
    assert (await outputs(engine, triton, request(2, stream=True)))[-1].completion_tokens == 2


async def test_a_request_given_up_on_the_shared_call_stops_the_engine_and_the_others_are_sent_again(
    triton_server: tuple[Endpoint, Path],
) -> None:
    """Answers this long share the call only when the engine is told to (the default gives them
    calls of their own: the next test); the shared call's give-up is what is tested here."""
    address, log_path = triton_server[0].grpc_address, triton_server[1]
    engine = TritonEngine(short_answer_tokens=10_000)
    try:
        before = len(cancelled_counts(log_path))
        story = "Write a very long and detailed story about a dragon and a knight."
        long = asyncio.create_task(collect(engine, address, SLOW_MODEL, request(4000, request_id="long", prompt=story)))
        await asyncio.sleep(0.5)  # generating; the short request below waits behind it in the engine
        short = asyncio.create_task(collect(engine, address, SLOW_MODEL, request(3, request_id="short")))
        await asyncio.sleep(0.2)
        assert not long.done()
        long.cancel()  # the client left: the shared call is cancelled, so the engine stops
        answer = await asyncio.wait_for(short, 120)  # sent again on a new shared call, and answered
        assert answer[-1].completion_tokens > 0 and answer[-1].finish_reason in ("length", "stop")
        with pytest.raises(asyncio.CancelledError):
            await long
        stopped = await cancellations_after(log_path, before)
        assert all(n < 4000 for n in stopped), "the engine stopped the given-up request part-way"
    finally:
        await engine.close()


async def test_a_long_single_answer_given_up_stops_alone_on_a_call_of_its_own(
    triton_server: tuple[Endpoint, Path], engine: TritonEngine
) -> None:
    endpoint, log_path = triton_server
    before = len(cancelled_counts(log_path))
    story = "Write a very long and detailed story about a dragon and a knight."
    job = request(4000, request_id="long", prompt=story)
    long = asyncio.create_task(collect(engine, endpoint.grpc_address, SLOW_MODEL, job, endpoint.http_address))
    await asyncio.sleep(0.5)
    short = asyncio.create_task(collect(engine, endpoint.grpc_address, SLOW_MODEL, request(3, request_id="short")))
    await asyncio.sleep(0.2)
    assert not long.done()
    shared = engine._endpoint_streams[endpoint.grpc_address]._shared
    assert shared is not None and list(shared.waiting) and not engine._http_streams, "long: gRPC; short: shared"
    long.cancel()  # the client left: only its own call is cancelled
    answer = await asyncio.wait_for(short, 120)
    assert answer[-1].completion_tokens > 0
    assert engine._endpoint_streams[endpoint.grpc_address]._shared is shared, "the shared call was left alone"
    with pytest.raises(asyncio.CancelledError):
        await long
    assert all(n < 4000 for n in await cancellations_after(log_path, before))


async def collect(
    engine: TritonEngine, address: str, model: str, job: GenerationRequest, http_address: str | None = None
) -> list:
    return [output async for output in engine.generate(address, model, job, http_address=http_address)]


async def over_http(engine: TritonEngine, endpoint: Endpoint, model: str, job: GenerationRequest) -> list:
    return await collect(engine, endpoint.grpc_address, model, job, endpoint.http_address)


def cancelled_counts(log_path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"request cancelled after (\d+) generated tokens", log_path.read_text())]


async def cancellations_after(log_path: Path, before: int) -> list[int]:
    """The model's "request cancelled" log lines after the first `before` ones, once there is one."""

    async def logged() -> list[int]:
        while len(found := cancelled_counts(log_path)) == before:
            await asyncio.sleep(0.05)
        return found[before:]

    return await asyncio.wait_for(logged(), 30)


async def test_a_streaming_request_goes_over_http_with_a_response_per_token(
    endpoint: Endpoint, engine: TritonEngine
) -> None:
    answer = await over_http(engine, endpoint, MODEL, request(5, stream=True))
    assert [o.completion_tokens for o in answer if o.text] == [1, 2, 3, 4, 5]
    assert answer[-1].finish_reason == "length" and answer[-1].prompt_tokens > 0
    assert engine._http_streams and endpoint.grpc_address not in engine._endpoint_streams  # no gRPC call


async def test_http_and_grpc_give_the_same_stream(endpoint: Endpoint, engine: TritonEngine) -> None:
    job = request(12, stream=True, prompt="Name three colours.")
    by_http = await over_http(engine, endpoint, SLOW_MODEL, job)
    by_grpc = await collect(engine, endpoint.grpc_address, SLOW_MODEL, job)
    assert [(o.text, o.prompt_tokens, o.completion_tokens, o.finish_reason) for o in by_http] == [
        (o.text, o.prompt_tokens, o.completion_tokens, o.finish_reason) for o in by_grpc
    ]


async def test_a_streaming_request_stopped_early_over_http_stops_the_engine(
    triton_server: tuple[Endpoint, Path], engine: TritonEngine
) -> None:
    endpoint, log_path = triton_server
    before = len(cancelled_counts(log_path))
    story = "Write a very long and detailed story about a dragon and a knight."
    outputs = engine.generate(
        endpoint.grpc_address, SLOW_MODEL, request(4000, stream=True, prompt=story), http_address=endpoint.http_address
    )
    for _ in range(3):
        await anext(outputs)
    await outputs.aclose()  # the client left: the connection is closed, and Triton cancels
    assert all(3 <= n < 4000 for n in await cancellations_after(log_path, before))
    # The endpoint still answers: the next request gets a connection of its own.
    assert (await over_http(engine, endpoint, MODEL, request(2, stream=True)))[-1].completion_tokens == 2


async def test_over_http_an_engine_error_is_the_requests_and_a_missing_model_is_unreachable(
    endpoint: Endpoint, engine: TritonEngine
) -> None:
    with pytest.raises(EngineRejected, match="max_tokens"):
        await over_http(engine, endpoint, MODEL, request(-1, stream=True))
    with pytest.raises(EngineUnreachable, match="unknown model"):
        await over_http(engine, endpoint, "no-such-model", request(2, stream=True))
    gone = Endpoint(name="gone", grpc_address=endpoint.grpc_address, http_address=f"127.0.0.1:{free_port()}")
    with pytest.raises(EngineUnreachable):
        await over_http(engine, gone, MODEL, request(2, stream=True))


async def test_a_short_single_answer_goes_over_http_generate(endpoint: Endpoint, engine: TritonEngine) -> None:
    """One JSON answer on a kept-alive connection: no gRPC call at all. Triton does not cancel such
    a request when its client leaves, so only answers of at most SHORT_ANSWER_TOKENS go this way."""
    answer = await over_http(engine, endpoint, MODEL, request(3))
    assert len(answer) == 1 and answer[0].completion_tokens == 3 and answer[0].finish_reason == "length"
    assert (await over_http(engine, endpoint, MODEL, request(SHORT_ANSWER_TOKENS)))[0].completion_tokens > 0
    assert engine._http_streams and endpoint.grpc_address not in engine._endpoint_streams
    with pytest.raises(EngineRejected, match="max_tokens"):
        await over_http(engine, endpoint, MODEL, request(-1))
    with pytest.raises(EngineUnreachable, match="unknown model"):
        await over_http(engine, endpoint, "no-such-model", request(2))


async def test_a_long_single_answer_over_an_http_endpoint_takes_a_grpc_call_of_its_own(
    endpoint: Endpoint, engine: TritonEngine
) -> None:
    answer = await over_http(engine, endpoint, MODEL, request(SHORT_ANSWER_TOKENS + 1))
    assert len(answer) == 1 and answer[0].completion_tokens == SHORT_ANSWER_TOKENS + 1
    assert not engine._http_streams
    streams = engine._endpoint_streams[endpoint.grpc_address]
    assert streams._shared is None, "not on the shared call"
