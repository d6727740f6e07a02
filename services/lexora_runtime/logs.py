"""Structured JSON logs with the request id of the request being served (carried in NATS headers),
and its trace id when it is traced."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from opentelemetry import trace

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:  # traced (lexora_runtime.tracing): the log line finds its trace
            entry["trace_id"] = format(span_context.trace_id, "032x")
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would print every request line; our own request log replaces it.
    logging.getLogger("uvicorn.access").disabled = True
