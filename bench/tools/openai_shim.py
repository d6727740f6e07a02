"""A minimal OpenAI-compatible front for a Triton model, so LiteLLM can be pointed at the same
backend as everything else (LiteLLM speaks OpenAI HTTP; Triton does not).

POST /v1/chat/completions (stream or not) becomes one call to Triton's own HTTP generate
extension (`/v2/models/<model>/generate`, or `generate_stream` for SSE) over a keep-alive
connection pool, and the answer is rendered as an OpenAI chat completion (or chunks + [DONE]).
No auth, no validation beyond what the translation needs: it is a test fixture whose own cost
is measured alone (bench "shim" target) and subtracted from LiteLLM's figures.

    python -m bench shim --port 9100 --triton-http 127.0.0.1:8000 --model instant-echo
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import aiohttp
import orjson
from aiohttp import web


def _completion(request_id: str, model: str, text: str, out: dict) -> dict:
    prompt, completion = int(out.get("num_input_tokens") or 0), int(out.get("num_output_tokens") or 0)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": out.get("finish_reason") or "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def _chunk(request_id: str, model: str, created: int, delta: dict, finish: str | None = None) -> bytes:
    body = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


class Shim:
    def __init__(self, triton_http: str, triton_model: str):
        self.base = f"http://{triton_http}/v2/models/{triton_model}"
        self.session: aiohttp.ClientSession | None = None

    async def start(self, _app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(connector=connector)

    async def stop(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        model = body.get("model", "")
        stream = bool(body.get("stream"))
        triton_body = {
            "text_input": orjson.dumps(body.get("messages") or []).decode(),
            "apply_chat_template": True,
            "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
            "temperature": float(body.get("temperature", 0.7)),
            "top_p": float(body.get("top_p", 1.0)),
            "stream": stream,
        }
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        assert self.session is not None
        if not stream:
            async with self.session.post(f"{self.base}/generate", data=orjson.dumps(triton_body)) as upstream:
                out = orjson.loads(await upstream.read())
            if upstream.status != 200:
                return web.Response(status=upstream.status, body=orjson.dumps({"error": {"message": str(out)}}))
            return web.Response(
                body=orjson.dumps(_completion(request_id, model, out.get("text_output", ""), out)),
                content_type="application/json",
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        created = int(time.time())
        first = True
        last: dict = {}
        async with self.session.post(f"{self.base}/generate_stream", data=orjson.dumps(triton_body)) as upstream:
            async for line in upstream.content:
                if not line.startswith(b"data:"):
                    continue
                out = orjson.loads(line[5:])
                last = out
                text = out.get("text_output") or ""
                if text or first:
                    delta = {"role": "assistant", "content": text} if first else {"content": text}
                    await response.write(_chunk(request_id, model, created, delta))
                    first = False
        await response.write(_chunk(request_id, model, created, {}, last.get("finish_reason") or "stop"))
        if include_usage:
            prompt, completion = int(last.get("num_input_tokens") or 0), int(last.get("num_output_tokens") or 0)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            usage_chunk = {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench shim", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--triton-http", required=True, help="host:port of Triton's HTTP endpoint")
    parser.add_argument("--model", default="instant-echo", help="the Triton model name")
    args = parser.parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    shim = Shim(args.triton_http, args.model)
    app = web.Application()
    app.on_startup.append(shim.start)
    app.on_cleanup.append(shim.stop)
    app.router.add_post("/v1/chat/completions", shim.chat)
    app.router.add_post("/chat/completions", shim.chat)
    app.router.add_get("/v1/models", shim.models)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
