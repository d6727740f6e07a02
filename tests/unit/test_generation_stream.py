"""How the gateway reads a job's chunks from its inbox (no NATS: chunks are put on the inbox's queue)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn, GenerationChunk, GenerationRequest
from lexora_contracts.registry import Pricing
from lexora_router.client import GenerationStream, JobInboxes


@dataclass
class Published:
    subject: str
    data: bytes
    reply: str


class FakeNats:
    def __init__(self) -> None:
        self.published: list[Published] = []

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def publish(self, subject: str, data: bytes, reply: str = "", headers: dict | None = None) -> None:
        self.published.append(Published(subject, data, reply))


@dataclass
class Msg:
    subject: str
    data: bytes
    headers: dict | None = None


def _request(stream: bool) -> GenerationRequest:
    now = time.time()
    return GenerationRequest(
        request_id="req_1",
        account_id="acct_1",
        key_id="key_1",
        model="test/model",
        messages=[ChatTurn(role="user", content="hi")],
        max_tokens=8,
        temperature=0.7,
        top_p=1.0,
        stream=stream,
        deadline=now + 60,
        pricing=Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
        reserved_micro=0,
        received_at=now,
    )


async def _started(stream_requested: bool, *chunks: GenerationChunk) -> tuple[GenerationStream, FakeNats]:
    nc = FakeNats()
    inboxes = JobInboxes(nc)  # type: ignore[arg-type]
    stream = GenerationStream(inboxes, _request(stream_requested))
    await stream.start()
    inbox = nc.published[0].reply
    for chunk in chunks:
        await inboxes._deliver(Msg(inbox, chunk.model_dump_json().encode()))  # type: ignore[arg-type]
    return stream, nc


async def test_a_final_chunk_carrying_the_answer_reads_as_a_delta_then_the_final_chunk() -> None:
    done = GenerationChunk(kind="done", text="Hello there.", prompt_tokens=3, completion_tokens=4, cost_pico=7)
    stream, _ = await _started(False, done)
    delta = await stream.next()
    assert (delta.kind, delta.text, delta.prompt_tokens, delta.completion_tokens) == ("delta", "Hello there.", 3, 4)
    assert stream.finished, "nothing more comes from the router"
    final = await stream.next()
    assert final == done.model_copy(update={"text": ""})


async def test_streamed_deltas_and_a_final_chunk_without_text_pass_through_unchanged() -> None:
    chunks = [
        GenerationChunk(kind="delta", text="Hel", completion_tokens=1),
        GenerationChunk(kind="delta", text="lo", completion_tokens=2),
        GenerationChunk(kind="done", completion_tokens=2, finish_reason="stop"),
    ]
    stream, _ = await _started(True, *chunks)
    assert [await stream.next() for _ in chunks] == chunks


async def test_an_empty_answer_is_just_the_final_chunk() -> None:
    done = GenerationChunk(kind="done", finish_reason="length")
    stream, _ = await _started(False, done)
    assert await stream.next() == done


async def test_an_error_chunk_is_raised_as_its_error() -> None:
    error = GenerationChunk(kind="error", error=InvalidRequest("bad").info())
    stream, nc = await _started(False, error)
    with pytest.raises(InvalidRequest):
        await stream.next()
    await stream.release()
    assert [p.subject for p in nc.published] == ["router.v1.generation.start"], "a finished job is not cancelled"
