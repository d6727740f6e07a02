"""An OTLP/HTTP trace sink for the tracing benchmark (`python -m bench otlp-sink --port P`): takes
`POST /v1/traces` as a collector does, decodes each export (protobuf ExportTraceServiceRequest, or
OTLP JSON from tritonserver) to count its spans, answers 200, and keeps nothing else.

`GET /stats` answers {"exports": n, "spans": n} so the harness can check that every traced request
was exported. Runs in its own process, so its CPU is the collector's share of the machine, apart
from the harness's.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

EMPTY_REPLY = ExportTraceServiceResponse().SerializeToString()


def span_count(body: bytes, content_type: str) -> int:
    if content_type.startswith("application/json"):
        request = json.loads(body)
        return sum(
            len(scope.get("spans", []))
            for resource in request.get("resourceSpans", [])
            for scope in resource.get("scopeSpans", [])
        )
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def make_app() -> web.Application:
    counts = {"exports": 0, "spans": 0}

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes a gzip Content-Encoding itself
        counts["spans"] += span_count(body, request.content_type)
        counts["exports"] += 1
        if request.content_type.startswith("application/json"):
            return web.Response(body=b"{}", content_type="application/json")
        return web.Response(body=EMPTY_REPLY, content_type="application/x-protobuf")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench otlp-sink", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
