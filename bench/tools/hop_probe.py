"""The latency of each hop on the request path, measured one at a time at concurrency 1.

Against the running benchmark platform, with the same client code the services use:

- nats_request_reply: a NATS request/reply to a service that does nothing (billing's
  `$SRV.PING`), i.e. the floor of any service hop;
- billing_reserve: `billing.v1.credits.reserve` through billing's client (one Postgres transaction);
- kv_counter_cas: the gateway's rate-limit counter update (NATS KV get + compare-and-set), on a
  scratch bucket;
- jetstream_publish_ack: publishing one event with a message id and waiting for the ack, on a
  scratch file stream (what the router does before its final chunk);
- triton_grpc_stream_16 / triton_grpc_single_16: Triton gRPC ModelStreamInfer with tritonclient
  for 16 tokens, a call per request, asking for a response per token (the router's streaming
  requests to an endpoint without an HTTP address) or for one response (stream=false);
- triton_http_stream_16: Triton's HTTP generate_stream read with aiohttp, a response per token
  (the router's streaming requests);
- triton_http_generate_16: Triton's HTTP generate (the "direct" baseline);
- router_job: a whole generation job sent to the router over NATS (router + Triton + usage event),
  without the gateway, billing's hold or the rate limit;
- gateway_http: the whole request through the gateway (all of the above that apply).

Prints one JSON object: per hop, p50/p90/p99 in milliseconds and the client CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient

from bench import report
from bench.tools.loadgen import read_response
from lexora_billing.client import BillingClient
from lexora_contracts import subjects
from lexora_contracts.messages import (
    ChatTurn,
    GenerationChunk,
    GenerationRequest,
    ReserveRequest,
    UsageEvent,
)
from lexora_contracts.registry import Pricing
from lexora_runtime.bus import connect, encode, publish_usage_event
from lexora_runtime.loop import fast_runner

PROMPT = [ChatTurn(role="user", content="Say hello in one short sentence.")]
OUTPUTS = ("text_output", "num_input_tokens", "num_output_tokens", "finish_reason", "stop_word")


async def timed(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        await fn()
    samples = []
    cpu0 = os.times()
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    cpu1 = os.times()
    summary = report.summarize(samples)
    out = {k: summary[k] for k in ("p50", "p90", "p99", "mean")}
    out["client_cpu_ms"] = round(((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) * 1000 / n, 3)
    return out


def _generation(account_id: str, key_id: str, model: str, max_tokens: int) -> GenerationRequest:
    now = time.time()
    return GenerationRequest(
        request_id=f"bench-hops-{uuid.uuid4().hex}",
        account_id=account_id,
        key_id=key_id,
        model=model,
        messages=PROMPT,
        max_tokens=max_tokens,
        temperature=0.7,
        top_p=1.0,
        stream=False,
        deadline=now + 60,
        pricing=Pricing(input_micro_per_mtok=1_000_000, output_micro_per_mtok=1_000_000),
        reserved_micro=0,
        received_at=now,
    )


async def main(args: argparse.Namespace) -> dict[str, object]:
    n = args.n
    nc = await connect(args.nats_url, "bench-hops")
    js = nc.jetstream()
    billing = BillingClient(nc)
    out: dict[str, object] = {"n": n, "max_tokens": args.max_tokens}

    async def ping() -> None:
        await nc.request("$SRV.PING.billing", b"", timeout=5)

    out["nats_request_reply"] = await timed(ping, n)

    held: list[str] = []

    async def reserve() -> None:
        request_id = f"bench-hops-{uuid.uuid4().hex}"
        await billing.reserve(ReserveRequest(request_id=request_id, account_id=args.account, amount_micro=1, ttl_s=300))
        held.append(request_id)

    out["billing_reserve"] = await timed(reserve, n)
    # Release the holds as a job that produced nothing would (an outcome at cost 0), untimed.
    for request_id in held:
        await publish_usage_event(
            js,
            UsageEvent(
                request_id=request_id,
                account_id=args.account,
                key_id=args.key_id,
                model=args.model,
                status_code=200,
                received_at=time.time(),
                latency_ms=0,
            ),
        )

    kv = await js.create_key_value(bucket="bench-hops", history=1)
    await kv.put("counter", b'{"n":0}')

    async def cas() -> None:
        entry = await kv.get("counter")
        state = json.loads(entry.value)
        state["n"] += 1
        await kv.update("counter", json.dumps(state).encode(), last=entry.revision)

    out["kv_counter_cas"] = await timed(cas, n)
    await js.delete_key_value("bench-hops")

    await js.add_stream(name="BENCH_HOPS", subjects=["bench.hops.>"])

    async def publish() -> None:
        await js.publish("bench.hops.event", b'{"x":1}', headers={"Nats-Msg-Id": uuid.uuid4().hex})

    out["jetstream_publish_ack"] = await timed(publish, n)
    await js.delete_stream("BENCH_HOPS")

    # The router's client library and tensors (tritonclient gRPC aio, one ModelStreamInfer call per
    # job, as lexora_router.triton_engine does), built here so this probe does not depend on the
    # router's internals.
    client = InferenceServerClient(args.triton_grpc)
    text = json.dumps([m.model_dump() for m in PROMPT]).encode()

    def inputs(stream: bool) -> list[InferInput]:
        built = []
        for name, dtype, value in (
            ("text_input", "BYTES", np.array([text], dtype=np.object_)),
            ("apply_chat_template", "BOOL", np.array([True], dtype=bool)),
            ("max_tokens", "INT32", np.array([args.max_tokens], dtype=np.int32)),
            ("stream", "BOOL", np.array([stream], dtype=bool)),
            ("temperature", "FP32", np.array([0.7], dtype=np.float32)),
            ("top_p", "FP32", np.array([1.0], dtype=np.float32)),
        ):
            tensor = InferInput(name, list(value.shape), dtype)
            tensor.set_data_from_numpy(value)
            built.append(tensor)
        return built

    async def grpc(stream: bool) -> None:
        async def one_request():  # type: ignore[no-untyped-def]
            yield {
                "model_name": "instant-echo",
                "inputs": inputs(stream),
                "outputs": [InferRequestedOutput(name) for name in OUTPUTS],
                "request_id": "hops",
            }

        responses = client.stream_infer(one_request())
        try:
            async for result, error in responses:
                if error is not None:
                    raise RuntimeError(str(error))
                # What the router reads from every response.
                finish = {name: result.as_numpy(name) for name in OUTPUTS}["finish_reason"]
                if finish is not None and finish.reshape(-1)[0]:
                    break
        finally:
            responses.cancel()

    out[f"triton_grpc_stream_{args.max_tokens}"] = await timed(lambda: grpc(True), n)
    out[f"triton_grpc_single_{args.max_tokens}"] = await timed(lambda: grpc(False), n)
    await client.close()

    reader_writer: dict[str, asyncio.StreamReader | asyncio.StreamWriter] = {}
    direct_body = json.dumps(
        {
            "text_input": json.dumps([m.model_dump() for m in PROMPT]),
            "apply_chat_template": True,
            "max_tokens": args.max_tokens,
            "stream": False,
        }
    ).encode()

    async def http_post(port: int, path: str, body: bytes, headers: str = "") -> None:
        if "w" not in reader_writer:
            reader_writer["r"], reader_writer["w"] = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = reader_writer["r"], reader_writer["w"]
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)  # type: ignore[union-attr]
        response, reusable = await read_response(reader, None)  # type: ignore[arg-type]
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
        if not reusable:
            writer.close()  # type: ignore[union-attr]
            reader_writer.clear()

    out[f"triton_http_generate_{args.max_tokens}"] = await timed(
        lambda: http_post(args.triton_http, "/v2/models/instant-echo/generate", direct_body), n
    )
    reader_writer.clear()

    stream_body = json.dumps({**json.loads(direct_body), "stream": True}).encode()
    async with aiohttp.ClientSession() as session:

        async def http_stream() -> None:
            url = f"http://127.0.0.1:{args.triton_http}/v2/models/instant-echo/generate_stream"
            async with session.post(url, data=stream_body, headers={"Content-Type": "application/json"}) as response:
                async for line in response.content:
                    if line.startswith(b"data:"):
                        json.loads(line[5:])

        out[f"triton_http_stream_{args.max_tokens}"] = await timed(http_stream, n)

    async def router_job() -> None:
        job = _generation(args.account, args.key_id, args.model, args.max_tokens)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subjects.ROUTER_GENERATION_START, encode(job), reply=inbox)
        while True:
            msg = await sub.next_msg(timeout=10)
            if GenerationChunk.model_validate_json(msg.data).kind in ("done", "error"):
                break
        await sub.unsubscribe()

    out["router_job"] = await timed(router_job, n)

    chat = json.dumps(
        {"model": args.model, "messages": [m.model_dump() for m in PROMPT], "max_tokens": args.max_tokens}
    ).encode()
    out["gateway_http"] = await timed(
        lambda: http_post(args.gateway_port, "/v1/chat/completions", chat, f"Authorization: Bearer {args.api_key}\r\n"),
        n,
    )
    await nc.drain()
    return out


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench hops", description="per-hop latency at concurrency 1")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--triton-grpc", required=True)
    parser.add_argument("--triton-http", type=int, required=True)
    parser.add_argument("--gateway-port", type=int, required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--key-id", default="bench")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", default="bench/instant-echo")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args(argv)
    with fast_runner() as runner:
        result = runner.run(main(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    cli()
