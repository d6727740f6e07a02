"""A closed-loop HTTP/1.1 load generator for streaming (time to first token) and exact-count runs.

Runs in its own process (bench/run.py starts it with the project's interpreter). Each of
`--concurrency` workers owns one keep-alive connection and sends the next request as soon as the
previous answer is complete, for `--duration` seconds (or until `--requests` are done); requests
in flight when time is up are finished and counted, so every request sent is accounted for.

Per request it records the latency to the last byte and, with `--marker`, the time until the
marker bytes first appear in the body: the instant-echo model's first token is "Hello", so for
every target (Triton's SSE, an OpenAI chunk stream) that is the time to first token.

Why not wrk for this: wrk only times whole responses. The non-streaming runs use wrk (C, far
cheaper per request); this generator is plain asyncio on uvloop with a hand-rolled response
reader (no HTTP library), cheap enough to drive the targets here, and it reports its own CPU
time so its share of the two cores is visible.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import sys
import time
from urllib.parse import urlsplit

from lexora_runtime.loop import fast_runner


def build_requests(url: str, body: bytes, headers: list[str], keys: list[str]) -> list[bytes]:
    """One pre-rendered request per API key (or one without a key)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    base = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    rendered = []
    for key in keys or [None]:
        lines = base + ([f"Authorization: Bearer {key}"] if key else [])
        rendered.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return rendered


class Response:
    __slots__ = ("status", "first_at", "done_at")

    def __init__(self) -> None:
        self.status = 0
        self.first_at = 0.0
        self.done_at = 0.0


async def read_response(reader: asyncio.StreamReader, marker: bytes | None) -> tuple[Response, bool]:
    """Reads one response; returns it and whether the connection may be reused."""
    response = Response()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    response.status = int(lines[0].split(b" ", 2)[1])
    length, chunked, keep_alive = None, False, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    found = marker is None
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if not found and marker in data:
                response.first_at = time.perf_counter()
                found = True
            if size == 0:
                break
    elif length is not None:
        data = await reader.readexactly(length)
        if not found and marker in data:
            response.first_at = time.perf_counter()
    else:  # until close
        data = await reader.read()
        if not found and marker in data:
            response.first_at = time.perf_counter()
        keep_alive = False
    response.done_at = time.perf_counter()
    return response, keep_alive


class Run:
    def __init__(self, args: argparse.Namespace, requests: list[bytes]):
        self.args = args
        self.requests = itertools.cycle(requests)
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.sent = 0
        self.stop_at = 0.0
        self.budget = args.requests or 0

    def take(self) -> bool:
        if self.budget:
            if self.sent >= self.budget:
                return False
        elif time.perf_counter() >= self.stop_at:
            return False
        self.sent += 1
        return True

    async def worker(self, host: str, port: int) -> None:
        marker = self.args.marker.encode() if self.args.marker else None
        reader = writer = None
        while self.take():
            payload = next(self.requests)
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(payload)
                response, reusable = await asyncio.wait_for(read_response(reader, marker), self.args.timeout)
            except Exception as exc:  # counted, the connection is dropped and reopened
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            if 200 <= response.status < 300:
                self.latencies.append((response.done_at - started) * 1000)
                if response.first_at:
                    self.ttfts.append((response.first_at - started) * 1000)
            if not reusable:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    async def run(self) -> dict:
        parts = urlsplit(self.args.url)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        self.stop_at = started + self.args.duration
        await asyncio.gather(*(self.worker(parts.hostname, parts.port) for _ in range(self.args.concurrency)))
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        ok = len(self.latencies)
        return {
            "tool": "loadgen",
            "url": self.args.url,
            "concurrency": self.args.concurrency,
            "duration_s": round(elapsed, 3),
            "requests": self.sent,
            "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "rps": ok / elapsed if elapsed else 0.0,
            "latency_ms": self.latencies,
            "ttft_ms": self.ttfts,
            "client_cpu_s": round(
                (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
                3,
            ),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="closed-loop HTTP load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header")
    parser.add_argument("--keys-file", help="API keys, one per line, rotated per request")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=0, help="stop after this many (overrides duration)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--marker", default="", help="bytes whose first appearance marks the first token")
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()
    keys = []
    if args.keys_file:
        with open(args.keys_file) as f:
            keys = [line.strip() for line in f if line.strip()]
    with fast_runner() as runner:
        result = runner.run(Run(args, build_requests(args.url, body, args.header, keys)).run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
