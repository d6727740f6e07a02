"""Talks to Triton over HTTP where the endpoint publishes an HTTP address (`generate_stream` for a
streaming client, `generate` for a short single answer) and over gRPC streaming otherwise, with
the TensorRT-LLM ensemble's tensor names.

The same protocol serves the local Python-backend model and TensorRT-LLM on GPUs: the tensors of
lexora_contracts.engine_tensors (`text_input`, `max_tokens`, `stream`, `temperature`, `top_p`,
`seed`, `stop_words`, ... in; `text_output` out, plus the token counts the engine measured).
Chat messages go as JSON with `apply_chat_template` so the model renders its own template and
counts its own tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from lexora_contracts.engine_tensors import CHAT_OUTPUTS, OPTIONAL_CHAT_OUTPUTS
from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_router import triton_wire
from lexora_router.engine_errors import Fault, classify
from lexora_router.triton_http import HttpEngineError, HttpStreams, first_value
from lexora_router.triton_streams import CHANNEL_OPTIONS, EndpointStreams, StreamClosed
from lexora_router.triton_wire import Tensors

# A single answer of at most this many tokens takes the cheapest path to the engine (HTTP generate,
# or the endpoint's shared gRPC call), which cannot stop it alone when its client leaves; a longer
# one gets a gRPC call of its own, which can (`TritonEngine.generate`).
SHORT_ANSWER_TOKENS = 64
REQUIRED_OUTPUTS = tuple(t.name for t in CHAT_OUTPUTS)
OUTPUTS = (*REQUIRED_OUTPUTS, *(t.name for t in OPTIONAL_CHAT_OUTPUTS))


@dataclass(frozen=True)
class ModelInterface:
    """What the router needs to know of a model's config: whether it batches (TensorRT-LLM's
    models take a leading batch dimension) and which of the outputs it asks for it declares."""

    batched: bool
    outputs: tuple[str, ...]

    @classmethod
    def from_config(cls, config: dict) -> ModelInterface:
        declared = {output.get("name") for output in config.get("output", [])}
        optional = tuple(t.name for t in OPTIONAL_CHAT_OUTPUTS if t.name in declared)
        return cls(int(config.get("max_batch_size", 0)) > 0, (*REQUIRED_OUTPUTS, *optional))


UNKNOWN_INTERFACE = ModelInterface(batched=False, outputs=OUTPUTS)


class EngineUnreachable(Exception):
    """The endpoint could not be reached: safe to retry elsewhere (nothing was generated)."""


class EngineRejected(Exception):
    """The engine answered with an error for this request (bad input, over context, ...)."""


class EngineFailed(Exception):
    """The engine broke while serving (stub not healthy, INTERNAL, a stream cut short): the server's
    fault (lexora_router.engine_errors). `produced`: outputs had already come back, so the request
    cannot be sent elsewhere."""

    def __init__(self, message: str, *, produced: bool):
        super().__init__(message)
        self.produced = produced


def engine_error(message: str, status: str | int | None = None, *, produced: bool) -> Exception:
    """The exception for an error the engine answered with: its fault, or the request's."""
    if classify(message, status) is Fault.ENGINE:
        return EngineFailed(message, produced=produced)
    return EngineRejected(message)


@dataclass
class EngineOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None  # set on the last output only
    stop_word: str | None = None  # the stop word that ended generation, on the last output


def _tensor(name: str, dtype: str, value: np.ndarray) -> tuple[str, str, np.ndarray]:
    return name, dtype, value


def to_triton(tensors: Tensors, batched: bool) -> list[InferInput]:
    """A model with max_batch_size > 0 (TensorRT-LLM's) takes a leading batch dimension: [1, ...]."""
    inputs = []
    for name, dtype, value in tensors:
        shaped = value.reshape(1, *value.shape) if batched else value
        tensor = InferInput(name, list(shaped.shape), dtype)
        tensor.set_data_from_numpy(shaped)
        inputs.append(tensor)
    return inputs


def _chat_inputs(messages: list[ChatTurn], max_tokens: int, raw_prompt: str | None = None) -> Tensors:
    chat = raw_prompt is None
    # {"role", "content": str} per turn; a turn with images has OpenAI-style content parts instead
    # (text and image_url data URIs, in order) for a vision model (TensorRT-LLM multimodal, Python backend).
    text = json.dumps([m.engine_message() for m in messages]) if chat else raw_prompt
    return [
        _tensor("text_input", "BYTES", np.array([text.encode()], dtype=np.object_)),
        _tensor("apply_chat_template", "BOOL", np.array([chat], dtype=bool)),
        _tensor("max_tokens", "INT32", np.array([max_tokens], dtype=np.int32)),
    ]


def build_inputs(request: GenerationRequest) -> Tensors:
    inputs = [
        *_chat_inputs(request.messages, request.max_tokens, request.raw_prompt),
        # Token by token only when the client streams: otherwise one response carries the answer,
        # saving the engine, the router and NATS a message per token.
        _tensor("stream", "BOOL", np.array([request.stream], dtype=bool)),
        _tensor("temperature", "FP32", np.array([request.temperature], dtype=np.float32)),
        _tensor("top_p", "FP32", np.array([request.top_p], dtype=np.float32)),
    ]
    if request.frequency_penalty or request.presence_penalty:
        inputs.append(_tensor("frequency_penalty", "FP32", np.array([request.frequency_penalty], dtype=np.float32)))
        inputs.append(_tensor("presence_penalty", "FP32", np.array([request.presence_penalty], dtype=np.float32)))
    if request.top_k:
        inputs.append(_tensor("top_k", "INT32", np.array([request.top_k], dtype=np.int32)))
    if request.guide_type:
        inputs.append(
            _tensor("guided_decoding_guide_type", "BYTES", np.array([request.guide_type.encode()], dtype=np.object_))
        )
        inputs.append(
            _tensor("guided_decoding_guide", "BYTES", np.array([(request.guide or "").encode()], dtype=np.object_))
        )
    if request.seed is not None:
        inputs.append(_tensor("seed", "UINT64", np.array([request.seed], dtype=np.uint64)))
    if request.stop:
        inputs.append(_tensor("stop_words", "BYTES", np.array([s.encode() for s in request.stop], dtype=np.object_)))
    if request.reasoning_budget is not None:  # reasoning models only (docs/architecture.md)
        inputs.append(_reasoning_budget(request.reasoning_budget))
    return inputs


def _reasoning_budget(budget: int) -> tuple[str, str, np.ndarray]:
    return _tensor("reasoning_budget", "INT32", np.array([budget], dtype=np.int32))


def _text(value: object) -> str:
    """A BYTES output's first element: bytes over gRPC, already a string over HTTP."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value if isinstance(value, str) else ""


def _engine_output(values: dict[str, object]) -> EngineOutput:
    return EngineOutput(
        text=_text(values.get("text_output")),
        prompt_tokens=int(values.get("num_input_tokens") or 0),  # type: ignore[call-overload]
        completion_tokens=int(values.get("num_output_tokens") or 0),  # type: ignore[call-overload]
        finish_reason=_text(values.get("finish_reason")) or None,
        stop_word=_text(values.get("stop_word")) or None,
    )


_GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def _not_loaded(message: str) -> bool:
    return "unknown model" in message


class TritonEngine:
    """Per endpoint: gRPC channels reused across requests (tritonclient's for the unary calls, and
    the streams of lexora_router.triton_streams for generation), and kept-alive HTTP connections
    (lexora_router.triton_http) for streaming clients and short single answers."""

    def __init__(self, short_answer_tokens: int = SHORT_ANSWER_TOKENS) -> None:
        self._short_answer_tokens = short_answer_tokens
        self._clients: dict[str, InferenceServerClient] = {}
        self._interfaces: dict[tuple[str, str], ModelInterface] = {}
        self._endpoint_streams: dict[str, EndpointStreams] = {}
        self._http_streams: dict[str, HttpStreams] = {}

    def _client(self, address: str) -> InferenceServerClient:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = InferenceServerClient(address, channel_args=CHANNEL_OPTIONS)
        return client

    async def generate(
        self, address: str, model: str, request: GenerationRequest, *, http_address: str | None = None
    ) -> AsyncIterator[EngineOutput]:
        """Stream outputs; raise EngineUnreachable before the first output, EngineRejected when the
        engine refuses the request, EngineFailed when the engine breaks (lexora_router.engine_errors).
        `address` is the endpoint's gRPC address, `http_address` its HTTP one if it publishes one."""
        # aclosing: when our caller stops early, the Triton request is cancelled now, not at GC.
        # Where stopping early saves the engine work, the request has a connection or call of its
        # own, which Triton cancels alone: a streaming client's (HTTP generate_stream, else a gRPC
        # call), and a long single answer's (a gRPC call: Triton 2.51 does not cancel a request whose
        # single response is still to come when its HTTP client goes away). A short single answer
        # takes the cheapest path: HTTP generate, else the endpoint's shared gRPC call; one that is
        # given up runs to its end, at most SHORT_ANSWER_TOKENS tokens (docs/architecture.md).
        tensors = build_inputs(request)
        short = request.max_tokens <= self._short_answer_tokens
        if http_address and (request.stream or short):
            stream = self._http_generate(http_address, model, tensors, streamed=request.stream)
        else:
            own_call = request.stream or not short
            stream = self._stream(address, model, tensors, request.request_id, own_call=own_call)
        async with aclosing(stream) as outputs:
            async for output in outputs:
                yield output

    async def count_tokens(
        self, address: str, model: str, messages: list[ChatTurn], reasoning_budget: int | None = None
    ) -> int:
        """The prompt's token count by the model's own tokenizer and template (max_tokens 0); for a
        reasoning model, with the prefill that opens its thinking when it will think."""
        tensors = _chat_inputs(messages, 0)
        if reasoning_budget is not None:
            tensors.append(_reasoning_budget(reasoning_budget))
        async with aclosing(self._stream(address, model, tensors, "count", own_call=False)) as outputs:
            async for output in outputs:
                return output.prompt_tokens
        raise EngineRejected("the engine returned no count")

    async def probe_generation(self, address: str, model: str) -> None:
        """Ask a chat model for one token, on a gRPC call of its own (a probe given up at its timeout
        cancels only itself, never the shared call). Raises like `generate`."""
        tensors = [
            *_chat_inputs([ChatTurn(role="user", content="Say OK.")], 1),
            _tensor("stream", "BOOL", np.array([False], dtype=bool)),
            _tensor("temperature", "FP32", np.array([0.0], dtype=np.float32)),
        ]
        async with aclosing(self._stream(address, model, tensors, "probe", own_call=True)) as outputs:
            async for _ in outputs:
                pass

    async def last_inference_age(self, address: str, model: str) -> float | None:
        """Seconds since the model last completed an inference (any client's), from Triton's
        statistics; None if it never did or they cannot be read. Failed requests do not count."""
        try:
            stats = await self._client(address).get_inference_statistics(model, as_json=True)
        except InferenceServerException:
            return None
        last_ms = max((int(s.get("last_inference") or 0) for s in stats.get("model_stats", [])), default=0)
        return None if last_ms <= 0 else max(0.0, time.time() - last_ms / 1000)

    async def _interface(self, address: str, model: str) -> ModelInterface:
        """Read once per endpoint and model from the model's own config."""
        known = self._interfaces.get((address, model))
        if known is None:
            try:
                config = await self._client(address).get_model_config(model, as_json=True)
            except InferenceServerException:
                return UNKNOWN_INTERFACE  # unreachable or unknown: the request itself will say so
            known = self._interfaces[(address, model)] = ModelInterface.from_config(config.get("config", {}))
        return known

    def _streams(self, address: str) -> EndpointStreams:
        streams = self._endpoint_streams.get(address)
        if streams is None:
            streams = self._endpoint_streams[address] = EndpointStreams(address)
        return streams

    async def _stream(
        self, address: str, model: str, tensors: Tensors, request_id: str, *, own_call: bool
    ) -> AsyncIterator[EngineOutput]:
        """The outputs of one request, to its last (Triton flags it). Decoupled models answer
        only on the streaming API, even with a single response. `own_call`: on a gRPC call of its
        own, which Triton stops as soon as the caller does; else on the endpoint's shared call."""
        interface = await self._interface(address, model)
        request = triton_wire.infer_request(model, tensors, interface.batched, request_id, interface.outputs)
        streams = self._streams(address)
        produced = False
        try:
            async with aclosing(streams.own(request) if own_call else streams.shared(request)) as responses:
                async for response in responses:
                    if response.error_message:
                        if not produced and _not_loaded(response.error_message):
                            raise EngineUnreachable(f"{address}: model {model} not loaded")
                        raise engine_error(response.error_message, produced=produced)
                    produced = True
                    yield _engine_output(triton_wire.first_values(response.infer_response))
        except grpc.aio.AioRpcError as exc:
            # CANCELLED here is the server's doing (ours ends the call without an error): a replica
            # shutting down cancels the calls it still holds.
            if not produced and exc.code() in _GONE:
                raise EngineUnreachable(f"{address}: {exc.code().name}") from exc
            if exc.code() == grpc.StatusCode.CANCELLED:
                raise EngineFailed(f"{address}: the engine cancelled the call", produced=True) from exc
            if not produced and (exc.code() == grpc.StatusCode.NOT_FOUND or _not_loaded(exc.details() or "")):
                raise EngineUnreachable(f"{address}: model {model} not loaded") from exc
            raise engine_error(exc.details() or exc.code().name, exc.code().name, produced=produced) from exc
        except StreamClosed as exc:
            if not produced:
                raise EngineUnreachable(f"{address}: {exc}") from exc
            raise EngineFailed(str(exc), produced=True) from exc

    def _http(self, address: str) -> HttpStreams:
        streams = self._http_streams.get(address)
        if streams is None:
            streams = self._http_streams[address] = HttpStreams(address)
        return streams

    async def _http_responses(
        self, address: str, model: str, tensors: Tensors, *, streamed: bool
    ) -> AsyncIterator[dict[str, object]]:
        """Each response of `generate_stream` when `streamed`, else the one response of `generate`."""
        if streamed:
            async with aclosing(self._http(address).generate_stream(model, tensors)) as events:
                async for values in events:
                    yield values
        else:
            yield await self._http(address).generate(model, tensors)

    async def _http_generate(
        self, address: str, model: str, tensors: Tensors, *, streamed: bool
    ) -> AsyncIterator[EngineOutput]:
        """The outputs of one request over HTTP, on a connection of its own while it runs."""
        produced = finished = False
        try:
            async with aclosing(self._http_responses(address, model, tensors, streamed=streamed)) as responses:
                async for values in responses:
                    produced = True
                    output = _engine_output({name: first_value(values, name) for name in OUTPUTS})
                    finished = output.finish_reason is not None
                    yield output
        except HttpEngineError as exc:
            if exc.unreachable and not produced:
                raise EngineUnreachable(f"{address}: {exc}") from exc
            if exc.unreachable:  # the connection broke after outputs came back
                raise EngineFailed(str(exc), produced=True) from exc
            raise engine_error(str(exc), exc.status, produced=produced) from exc
        # Every model's last response carries its finish_reason: a stream that ends without one was
        # cut (the replica went away between two events), like a gRPC call ended early.
        if not finished:
            if not produced:
                raise EngineUnreachable(f"{address}: the engine ended the stream before any response")
            raise EngineFailed("the engine ended the stream before the request's last response", produced=True)

    async def infer(self, address: str, model: str, tensors: Tensors, outputs: tuple[str, ...]) -> object:
        """One request, one response (embedding and image models are not decoupled). Raises
        EngineUnreachable when nothing could be asked, EngineRejected when the model refused."""
        inputs = to_triton(tensors, (await self._interface(address, model)).batched)
        try:
            return await self._client(address).infer(
                model, inputs, outputs=[InferRequestedOutput(name) for name in outputs]
            )
        except InferenceServerException as exc:
            status, message = str(exc.status() or ""), str(exc.message() or "")
            if "UNAVAILABLE" in status or "unknown model" in message or "NOT_FOUND" in status:
                raise EngineUnreachable(f"{address}: {status or message}") from exc
            raise engine_error(message or status, status, produced=False) from exc

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        for streams in self._endpoint_streams.values():
            await streams.close()
        for http_streams in self._http_streams.values():
            await http_streams.close()
