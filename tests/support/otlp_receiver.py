"""A small real OTLP/HTTP trace receiver: what a collector's `otlphttp` receiver does with
`POST /v1/traces`, keeping the spans in memory for the tests to read.

It reads both encodings OTLP/HTTP allows: protobuf (ExportTraceServiceRequest, decoded with the
opentelemetry-proto package; the Python SDK's exporter sends it) and JSON (tritonserver's
OpenTelemetry exporter sends it, with hex ids as the OTLP JSON mapping says).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    failed: bool


def _kind(number: int) -> str:
    return Span.SpanKind.Name(number).removeprefix("SPAN_KIND_")


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    return getattr(value, which) if which else None


def _json_value(value: dict[str, Any]) -> Any:
    if "arrayValue" in value:
        return tuple(_json_value(item) for item in value["arrayValue"].get("values", []))
    if "intValue" in value:
        return int(value["intValue"])  # a string in OTLP JSON
    return next(iter(value.values()), None)


def spans_from_protobuf(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    received = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        kind=_kind(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        failed=span.status.code == span.status.STATUS_CODE_ERROR,
                    )
                )
    return received


def spans_from_json(body: bytes) -> list[ReceivedSpan]:
    request = json.loads(body)
    received = []
    for resource_spans in request.get("resourceSpans", []):
        attributes = resource_spans.get("resource", {}).get("attributes", [])
        resource = {a["key"]: _json_value(a["value"]) for a in attributes}
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                received.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span["name"],
                        kind=_kind(int(span.get("kind", 0))),
                        trace_id=span["traceId"].lower(),
                        span_id=span["spanId"].lower(),
                        parent_span_id=span.get("parentSpanId", "").lower(),
                        attributes={a["key"]: _json_value(a["value"]) for a in span.get("attributes", [])},
                        failed=span.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR"),
                    )
                )
    return received


class OtlpReceiver:
    """Listens on 127.0.0.1 (a free port); `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT names."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                as_json = (self.headers.get("Content-Type") or "").startswith("application/json")
                spans = spans_from_json(body) if as_json else spans_from_protobuf(body)
                with receiver._lock:
                    receiver.spans.extend(spans)
                    receiver.exports += 1
                reply = b"{}" if as_json else ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if as_json else "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for(self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0) -> list[ReceivedSpan]:
        """All spans received, once `found(spans)` holds or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if found(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)
