"""A replica that goes away in the middle of a streaming request (its pod deleted), on a real
tritonserver behind a TCP relay that cuts the connection at a chosen point: cut before any output,
the request is the endpoint's failure and another endpoint may take it (EngineUnreachable); cut
after output, it is the engine failing with output produced (EngineFailed, a 502, never retried)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_contracts.registry import Endpoint, Pricing
from lexora_dev.stack import start_triton
from lexora_router.triton_engine import EngineFailed, EngineOutput, EngineUnreachable, TritonEngine

ROOT = Path(__file__).resolve().parents[2]
MODEL = "instant-echo"
HEADERS_END = b"\r\n\r\n"
EVENT_END = b"\n\n"
CHUNK_END = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"  # the end of a chunked HTTP body


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    state = tmp_path_factory.mktemp("triton-cuts")
    repo = state / "models"
    repo.mkdir()
    (repo / MODEL).symlink_to(ROOT / "model-repo" / MODEL)
    process, endpoint = start_triton(state, model_repo=repo, timeout=120)
    try:
        yield endpoint
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def cutting_relay(upstream: str, cut_after_events: int, clean_end: bool = False) -> AsyncIterator[str]:
    """A TCP relay to `upstream` that closes the client's connection once the response's headers
    and `cut_after_events` SSE events have gone through; with `clean_end`, it ends the chunked body
    properly first (the stream ends as if the server had finished it). Yields its address."""
    host, _, port = upstream.rpartition(":")
    handlers: set[asyncio.Task[None]] = set()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection(host, int(port))

        async def forward_request() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await client_reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        forwarding = asyncio.create_task(forward_request())
        seen = b""
        try:
            while data := await up_reader.read(65536):
                seen += data
                cut = _cut_point(seen, cut_after_events, clean_end)
                if cut is not None:
                    client_writer.write(seen[len(seen) - len(data) : cut])
                    if clean_end:
                        client_writer.write(LAST_CHUNK)
                    break
                client_writer.write(data)
            await client_writer.drain()
        finally:
            forwarding.cancel()
            client_writer.close()
            up_writer.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for handler in handlers:  # a kept-alive upstream connection never ends by itself
            handler.cancel()


def _cut_point(seen: bytes, events: int, whole_chunks: bool) -> int | None:
    """Where to cut: after the headers and `events` complete SSE events, and with `whole_chunks`
    after the chunk that carries the last of them (None: not there yet)."""
    at = seen.find(HEADERS_END)
    if at < 0:
        return None
    at += len(HEADERS_END)
    for _ in range(events):
        start = seen.find(b"data:", at)
        end = seen.find(EVENT_END, start) if start >= 0 else -1
        if end < 0:
            return None
        at = end + len(EVENT_END)
        if whole_chunks:
            if len(seen) < at + len(CHUNK_END):
                return None
            assert seen[at : at + len(CHUNK_END)] == CHUNK_END, "one event per chunk"
            at += len(CHUNK_END)
    return at


def _request() -> GenerationRequest:
    return GenerationRequest(
        request_id="cut",
        account_id="a",
        key_id="k",
        model="m",
        messages=[ChatTurn(role="user", content="Say hello")],
        max_tokens=50,
        temperature=0.0,
        top_p=1.0,
        stream=True,  # a streaming client's request goes over HTTP generate_stream
        deadline=time.time() + 60,
        pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
        reserved_micro=0,
        received_at=time.time(),
    )


async def _generate(endpoint: Endpoint, http_address: str) -> list[EngineOutput]:
    engine = TritonEngine()
    got: list[EngineOutput] = []
    try:
        async for output in engine.generate(endpoint.grpc_address, MODEL, _request(), http_address=http_address):
            got.append(output)
        return got
    except (EngineUnreachable, EngineFailed) as exc:
        exc.outputs = got  # type: ignore[attr-defined]
        raise
    finally:
        await engine.close()


async def test_the_relay_passes_a_whole_stream(triton: Endpoint) -> None:
    assert triton.http_address
    async with cutting_relay(triton.http_address, cut_after_events=10_000) as relay:
        outputs = await _generate(triton, relay)
    assert outputs[-1].finish_reason == "length" and outputs[-1].completion_tokens == 50
    assert all(output.finish_reason is None for output in outputs[:-1])


async def test_a_stream_cut_before_any_output_may_go_to_another_endpoint(triton: Endpoint) -> None:
    assert triton.http_address
    async with cutting_relay(triton.http_address, cut_after_events=0) as relay:
        with pytest.raises(EngineUnreachable) as caught:
            await _generate(triton, relay)
    assert caught.value.outputs == []  # type: ignore[attr-defined]


async def test_a_stream_cut_after_output_is_the_engine_failing_with_output_produced(triton: Endpoint) -> None:
    assert triton.http_address
    async with cutting_relay(triton.http_address, cut_after_events=3) as relay:
        with pytest.raises(EngineFailed) as caught:
            await _generate(triton, relay)
    assert caught.value.produced
    assert len(caught.value.outputs) == 3  # type: ignore[attr-defined]
    assert all(output.finish_reason is None for output in caught.value.outputs)  # type: ignore[attr-defined]


@pytest.mark.parametrize("events", [0, 3])
async def test_a_stream_ended_without_its_last_response_is_cut_too(triton: Endpoint, events: int) -> None:
    """The connection ends cleanly but the answer has no finish_reason: not taken as a whole answer."""
    assert triton.http_address
    async with cutting_relay(triton.http_address, cut_after_events=events, clean_end=True) as relay:
        with pytest.raises(EngineFailed if events else EngineUnreachable) as caught:
            await _generate(triton, relay)
    assert len(caught.value.outputs) == events  # type: ignore[attr-defined]
