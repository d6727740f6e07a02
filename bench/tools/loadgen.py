"""An HTTP/1.1 load generator for streaming (time to first token), exact-count and fixed-rate runs.

Runs in its own process (`python -m bench loadgen`; the gateway run starts it with the project's
interpreter).

- Closed loop (the default): each of `--concurrency` workers owns one keep-alive connection and
  sends the next request as soon as the previous answer is complete, for `--duration` seconds (or
  until `--requests` are done); requests in flight when time is up are finished and counted, so
  every request sent is accounted for.
- Open loop (`--rate R`): a request is due every 1/R seconds whatever the answers do (wrk2's
  "constant throughput"), on an idle keep-alive connection or a new one, with at most
  `--concurrency` in flight. A request that is due while all of them are busy waits, and its
  latency counts from the moment it was due, so a stalled server is not hidden by the client
  slowing down with it (coordinated omission). Otherwise latency counts from the moment it is
  written: this client's own timer lateness (uvloop's timers have 1 ms resolution) is reported as
  `late_ms`, not charged to the server.

Per request it records the latency to the last byte and, with `--marker`, the time until the
marker bytes first appear in the body: the instant-echo model's first token is "Hello", so for
every target (Triton's SSE, an OpenAI chunk stream) that is the time to first token.

Why not wrk for this: wrk only times whole responses and keeps a closed loop. The closed-loop
non-streaming runs use wrk (C, far cheaper per request); this generator is plain asyncio on uvloop
with a hand-rolled response reader (no HTTP library), cheap enough to drive the targets here, and
it reports its own CPU time so its share of the two cores is visible.

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


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


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
        self.marker = args.marker.encode() if args.marker else None
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.sent = 0
        self.waited = 0  # open loop: requests that were due while every connection was busy
        self.late: list[float] = []  # open loop: how late this client wrote each request, ms
        self.stop_at = 0.0
        self.budget = args.requests or 0

    def take(self, now: float | None = None) -> bool:
        """Whether another request is to be sent (at `now`, by default the present)."""
        if self.budget:
            if self.sent >= self.budget:
                return False
        elif (time.perf_counter() if now is None else now) >= self.stop_at:
            return False
        self.sent += 1
        return True

    async def exchange(
        self, conn: Connection | None, payload: bytes, host: str, port: int, due: float | None
    ) -> Connection | None:
        """Sends one request (on `conn`, or a new connection) and records its outcome; returns the
        connection when it may be reused. Latency counts from `due` when given, else from the write."""
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            reader, writer = conn
            started = time.perf_counter() if due is None else due
            writer.write(payload)
            response, reusable = await asyncio.wait_for(read_response(reader, self.marker), self.args.timeout)
        except Exception as exc:  # counted, the connection is dropped (and reopened by the next request)
            self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            if conn is not None:
                conn[1].close()
            return None
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        if 200 <= response.status < 300:
            self.latencies.append((response.done_at - started) * 1000)
            if response.first_at:
                self.ttfts.append((response.first_at - started) * 1000)
        if not reusable:
            writer.close()
            return None
        return conn

    async def worker(self, host: str, port: int) -> None:
        """Closed loop: one connection, the next request as soon as the answer is in."""
        conn = None
        while self.take():
            conn = await self.exchange(conn, next(self.requests), host, port, None)
        if conn is not None:
            conn[1].close()

    async def open_loop(self, host: str, port: int) -> None:
        """Open loop: a request due every 1/rate seconds, at most `concurrency` in flight."""
        interval = 1.0 / self.args.rate
        slots = asyncio.Semaphore(self.args.concurrency)
        idle: list[Connection] = []
        in_flight: set[asyncio.Task[None]] = set()

        async def one(payload: bytes, due: float) -> None:
            waited = slots.locked()
            async with slots:
                conn = idle.pop() if idle else None
                conn = await self.exchange(conn, payload, host, port, due if waited else None)
                if conn is not None:
                    idle.append(conn)
            self.waited += waited

        first = time.perf_counter()
        for i in itertools.count():
            due = first + i * interval
            if not self.take(due):
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.late.append((time.perf_counter() - due) * 1000)
            task = asyncio.create_task(one(next(self.requests), due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
        for _, writer in idle:
            writer.close()

    async def run(self) -> dict:
        parts = urlsplit(self.args.url)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        self.stop_at = started + self.args.duration
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        if self.args.rate:
            await self.open_loop(host, port)
        else:
            await asyncio.gather(*(self.worker(host, port) for _ in range(self.args.concurrency)))
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        ok = len(self.latencies)
        return {
            "tool": "loadgen",
            "url": self.args.url,
            "concurrency": self.args.concurrency,
            "rate": self.args.rate,
            "duration_s": round(elapsed, 3),
            "requests": self.sent,
            "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "rps": ok / elapsed if elapsed else 0.0,
            "latency_ms": self.latencies,
            "ttft_ms": self.ttfts,
            "waited_for_a_connection": self.waited,
            "late_ms": self.late,
            "client_cpu_s": round(
                (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
                3,
            ),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench loadgen", description="closed- or open-loop HTTP load generator"
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header")
    parser.add_argument("--keys-file", help="API keys, one per line, rotated per request")
    parser.add_argument("--concurrency", type=int, default=1, help="workers; with --rate, the most requests in flight")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second (0: closed loop)")
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
