"""Requests to one Triton endpoint over gRPC `ModelStreamInfer`, on a shared stream or their own.

Opening a gRPC call costs the router more CPU than a whole short generation (measured: ~1 ms per
call against ~0.4 ms on a call kept open). So token counts, and short single answers to an
endpoint without an HTTP address, share one long-lived call per endpoint; each response goes back
to its request by the id it carries.

Triton cancels requests only a whole call at a time. A request that can leave in the middle of a
long answer (a streaming client's, a long single answer's) gets a call of its own. A request on
the shared call gets a single response, at its end; when one is given up before it (the client
left, the deadline passed), the shared call is cancelled so the engine stops working on it, and
the other requests that were waiting on that call, which have received nothing yet, are sent
again on a new one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from lexora_router.triton_wire import is_final
from lexora_runtime import tracing

Response = service_pb2.ModelStreamInferResponse
INT32_MAX = 2**31 - 1
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", INT32_MAX),
    ("grpc.max_receive_message_length", INT32_MAX),
    # An engine's address outlives its pods: after a rollout the new pod is Ready within seconds,
    # but gRPC's default backoff (up to 120 s) left the router dialling it 25-50 s later (seen in the
    # cluster in a box). Retry a lost connection within 2 s at most.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _trace_metadata() -> tuple[tuple[str, str], ...] | None:
    """The current trace context as gRPC metadata, which Triton traced with
    --trace-config mode=opentelemetry continues; None when not traced."""
    headers = tracing.headers_with_context()
    return tuple(headers.items()) if headers else None


class StreamClosed(Exception):
    """The shared call ended while a request on it still waited for responses."""


class _SendAgain(StreamClosed):
    """The shared call was cancelled to stop another request: one that has received nothing is
    sent again on a new call (one that has, which a single-response request never is, fails as
    on any closed stream)."""


def ends_request(response: Response) -> bool:
    return bool(response.error_message) or is_final(response.infer_response)


@dataclass
class _OpenCall:
    call: grpc.aio.StreamStreamCall
    outbox: asyncio.Queue[service_pb2.ModelInferRequest]
    waiting: dict[str, asyncio.Queue[Response | BaseException]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    given_up: bool = False  # cancelled by us, to stop a request nobody waits for any more


class EndpointStreams:
    """The gRPC channel to one endpoint and its shared `ModelStreamInfer` call (opened on first use,
    and again after it breaks)."""

    def __init__(self, address: str):
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._shared: _OpenCall | None = None
        self._ids = itertools.count()

    async def shared(self, request: service_pb2.ModelInferRequest) -> AsyncIterator[Response]:
        """The responses to `request`, sent on the shared call, up to and including its last."""
        first_id = request.id
        while True:
            open_call = self._shared or self._open_shared()
            request_id = request.id = f"{first_id}#{next(self._ids)}"  # unique on the call
            queue = open_call.waiting[request_id] = asyncio.Queue()
            open_call.outbox.put_nowait(request)
            received = finished = False
            try:
                while not finished:
                    item = await queue.get()
                    if isinstance(item, _SendAgain) and not received:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    received, finished = True, ends_request(item)
                    yield item
                if finished:
                    return
            finally:
                open_call.waiting.pop(request_id, None)
                if not finished and open_call is self._shared:
                    self._give_up(open_call)  # the caller stopped early: so must the engine

    async def own(self, request: service_pb2.ModelInferRequest) -> AsyncIterator[Response]:
        """The responses to `request` on a call of its own, which is cancelled (and Triton stops the
        request) as soon as the caller stops reading."""
        call = self._stub.ModelStreamInfer(metadata=_trace_metadata())
        try:
            await call.write(request)
            async for response in call:
                yield response
                if ends_request(response):
                    return
            raise StreamClosed("the engine ended the call before the request's last response")
        finally:
            call.cancel()

    def _open_shared(self) -> _OpenCall:
        # Metadata is the call's, not a request's: requests on the shared call carry no trace
        # context to Triton (their spans end at the router's).
        outbox: asyncio.Queue[service_pb2.ModelInferRequest] = asyncio.Queue()

        async def requests() -> AsyncIterator[service_pb2.ModelInferRequest]:
            while True:
                yield await outbox.get()

        open_call = self._shared = _OpenCall(self._stub.ModelStreamInfer(requests()), outbox)
        open_call.reader = asyncio.create_task(self._read(open_call))
        return open_call

    def _give_up(self, open_call: _OpenCall) -> None:
        self._shared = None
        open_call.given_up = True
        open_call.call.cancel()

    async def _read(self, open_call: _OpenCall) -> None:
        ended: BaseException = StreamClosed("the engine closed the stream")
        try:
            async for response in open_call.call:
                queue = open_call.waiting.get(response.infer_response.id)
                if queue is not None:
                    queue.put_nowait(response)
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            if open_call.given_up:
                ended = _SendAgain()
            elif isinstance(exc, grpc.aio.AioRpcError):
                ended = exc
            else:
                ended = StreamClosed("the router is closing")
                raise
        finally:
            if self._shared is open_call:
                self._shared = None  # the next request opens a new call
            for queue in open_call.waiting.values():
                queue.put_nowait(ended)

    async def close(self) -> None:
        if self._shared is not None:
            self._shared.call.cancel()
        await self._channel.close()
