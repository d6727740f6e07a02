"""NATS helpers: connecting, typed request/reply, micro-service endpoints, JetStream setup."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats import micro
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from nats.micro.request import ERROR_CODE_HEADER
from pydantic import BaseModel, ValidationError

from lexora_contracts import subjects
from lexora_contracts.errors import (
    ErrorInfo,
    InternalError,
    InvalidRequest,
    LexoraError,
    ServiceUnavailable,
    error_from_info,
)
from lexora_contracts.messages import UsageEvent
from lexora_contracts.nats_permissions import inbox_prefix
from lexora_runtime import tracing
from lexora_runtime.logs import request_id_var

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)

USAGE_RETENTION_S = 7 * 24 * 3600
# JetStream keeps every message id of the window in memory (~200 bytes each: 250 MiB for an hour
# at 350 req/s). A publisher's retries of one event span under two minutes, and billing and usage
# drop a repeated request id on their own; ten minutes covers the retries with room to spare.
USAGE_DEDUP_WINDOW_S = 600
USAGE_PUBLISH_ATTEMPTS = 10


@dataclass(frozen=True)
class NatsAccess:
    """Who a process is on NATS: its user (a principal of `lexora_contracts.nats_permissions`) and
    password, and the CA that signed the server's certificate when NATS speaks TLS. No user: a
    server without authorization (a component's own test server)."""

    user: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __repr__(self) -> str:  # never the password
        return f"NatsAccess(user={self.user!r}, ca_file={self.ca_file!r})"

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.user:
            # Replies arrive under the user's own inbox prefix, the only one it may subscribe to.
            options |= {"user": self.user, "password": self.password or "", "inbox_prefix": inbox_prefix(self.user)}
        if self.ca_file:
            options["tls"] = ssl.create_default_context(cafile=self.ca_file)
        return options


async def connect(url: str, name: str, access: NatsAccess | None = None) -> NATS:
    return await nats.connect(
        url,
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        **(access or NatsAccess()).options(),
    )


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def request_headers(request_id: str | None = None) -> dict[str, str] | None:
    """The headers of a message sent for a request: its id, and the trace it is part of (if traced)."""
    request_id = request_id or request_id_var.get()
    return tracing.headers_with_context({subjects.REQUEST_ID_HEADER: request_id} if request_id else None)


# What nats-py raises when the bus itself is down or being reconnected to (a request's publish).
BUS_UNREACHABLE: tuple[type[Exception], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
)


async def call(nc: NATS, subject: str, payload: BaseModel, reply_model: type[Rep], *, timeout: float = 5.0) -> Rep:
    """Request/reply to another service; its typed errors are raised here as they were raised there.

    A service that is not running (no responders), does not answer in time, or a bus that cannot be
    reached is a ServiceUnavailable (503 with Retry-After): the request was not judged, so it is
    neither refused (401, 402) nor served."""
    service = subject.split(".")[0]
    with tracing.span(subject, tracing.SpanKind.CLIENT, attributes=_nats_attributes(subject)):
        try:
            msg = await nc.request(subject, encode(payload), timeout=timeout, headers=request_headers())
        except nats.errors.NoRespondersError as exc:
            raise ServiceUnavailable(f"The {service} service is not running; retry in a few seconds") from exc
        except nats.errors.TimeoutError as exc:
            raise ServiceUnavailable(f"The {service} service did not answer in time; retry in a few seconds") from exc
        except BUS_UNREACHABLE as exc:
            raise ServiceUnavailable("The message bus cannot be reached; retry in a few seconds") from exc
    if msg.headers and msg.headers.get(ERROR_CODE_HEADER):
        raise error_from_info(ErrorInfo.model_validate_json(msg.data))
    return reply_model.model_validate_json(msg.data)


def _nats_attributes(subject: str, **more: object) -> dict[str, object]:
    return {"messaging.system": "nats", "messaging.destination.name": subject, **more}


Handler = Callable[[Req], Awaitable[BaseModel]]
Unreachable = Callable[[BaseException], bool]


class EndpointRunner:
    """Adapts typed async handlers to nats micro endpoints.

    nats-py runs a subscription's callbacks one at a time; each request is handled in its own task
    so a slow one never blocks the next. Errors travel as micro error headers plus ErrorInfo JSON.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def adapt(
        self, request_model: type[Req], handler: Handler[Req], unreachable: Unreachable | None = None
    ) -> Callable[[micro.Request], Awaitable[None]]:
        """`unreachable`: whether an exception says a dependency (the service's database) cannot be
        reached right now; such a failure is answered ServiceUnavailable, not InternalError."""

        async def handle(request: micro.Request) -> None:
            headers = request.headers or {}
            request_id_var.set(headers.get(subjects.REQUEST_ID_HEADER))
            # The caller's trace goes on here (a span of the service's own, SERVER: it answers).
            with tracing.span(request.subject, tracing.SpanKind.SERVER, headers, _nats_attributes(request.subject)):
                try:
                    payload = request_model.model_validate_json(request.data)
                    reply = await handler(payload)
                    await request.respond(encode(reply))
                except ValidationError as exc:
                    await _respond_error(request, InvalidRequest(f"malformed message: {exc.errors()[0]['msg']}"))
                except LexoraError as exc:
                    await _respond_error(request, exc)
                except Exception as exc:
                    if unreachable is not None and unreachable(exc):
                        log.warning("handler's database unreachable: %s", type(exc).__name__)
                        down = ServiceUnavailable("The database cannot be reached right now; retry in a few seconds")
                        await _respond_error(request, down)
                        return
                    log.exception("handler failed")
                    await _respond_error(request, InternalError("internal error"))

        async def spawn(request: micro.Request) -> None:
            task = asyncio.create_task(handle(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return spawn

    async def drain(self, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


async def _respond_error(request: micro.Request, error: LexoraError) -> None:
    await request.respond_error(str(error.status), error.message, data=encode(error.info()))


async def start_service(
    nc: NATS,
    name: str,
    endpoints: dict[str, tuple[str, type[BaseModel], Handler]],  # type: ignore[type-arg]
    runner: EndpointRunner,
    unreachable: Unreachable | None = None,
) -> micro.Service:
    """Register a micro service (PING/INFO/STATS for free) with one queue-grouped endpoint per subject.
    `unreachable`: see EndpointRunner.adapt."""
    service = await micro.add_service(nc, name=name, version="0.1.0", description=f"lexora {name}")
    for endpoint_name, (subject, request_model, handler) in endpoints.items():
        await service.add_endpoint(
            name=endpoint_name,
            subject=subject,
            handler=runner.adapt(request_model, handler, unreachable),
            queue_group=subjects.SERVICE_QUEUE[name],
        )
    return service


# Every consumer of the usage stream. The stream keeps an event until each of them has acked it
# (interest retention), so it holds the backlog, not a week of history: nats-server's memory and
# disk no longer grow with every request. A consumer added here is created with the stream.
USAGE_CONSUMERS = (subjects.BILLING_SETTLE_CONSUMER, subjects.USAGE_RECORD_CONSUMER)


def usage_consumer_config(durable: str) -> ConsumerConfig:
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=subjects.USAGE_REQUEST_COMPLETED,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30,
        max_ack_pending=1000,
    )


async def ensure_usage_stream(js: JetStreamContext) -> None:
    """The usage stream and its consumers, as this version configures them; every service that
    publishes or consumes usage events calls it at start.

    Under interest retention an event that no consumer is interested in is dropped at once, so the
    consumers must exist before any event can arrive: a new stream is created keeping everything
    (limits retention), then its consumers, and only then switched to interest. A stream of an
    older version (limits retention, another window) keeps its events the same way: once its
    consumers exist, each is kept until both have acked it, and the rest go.
    """
    config = StreamConfig(
        name=subjects.USAGE_STREAM,
        subjects=subjects.USAGE_STREAM_SUBJECTS,
        retention=RetentionPolicy.INTEREST,
        storage=StorageType.FILE,
        max_age=USAGE_RETENTION_S,
        duplicate_window=USAGE_DEDUP_WINDOW_S,
    )
    # Already there (this version's or an older one's): changed below.
    with contextlib.suppress(BadRequestError):
        await js.add_stream(dataclasses.replace(config, retention=RetentionPolicy.LIMITS))
    for durable in USAGE_CONSUMERS:
        try:
            await js.add_consumer(subjects.USAGE_STREAM, usage_consumer_config(durable))
        except BadRequestError as exc:
            log.warning("usage consumer kept with its own settings", extra={"fields": {"error": str(exc)}})
    try:
        await js.update_stream(config)
    except BadRequestError as exc:
        log.warning("usage stream kept with its own settings", extra={"fields": {"error": str(exc)}})


async def _usage_subscription(js: JetStreamContext, durable: str) -> JetStreamContext.PullSubscription:
    await ensure_usage_stream(js)
    return await js.pull_subscribe(
        subjects.USAGE_REQUEST_COMPLETED,
        durable=durable,
        stream=subjects.USAGE_STREAM,
        config=usage_consumer_config(durable),
    )


class PoisonEvent(Exception):
    """An event that can never be handled (it is not a usage event at all): it is terminated for
    this consumer instead of being redelivered forever. It stays in the stream for inspection."""


def parse_usage_events(events: list[bytes]) -> tuple[list[BaseException | None], list[tuple[int, UsageEvent]]]:
    """A fetched batch read as usage events: the outcome of each (a PoisonEvent for what is not a
    usage event, else None so far) and the (position, event) of those that are."""
    outcomes: list[BaseException | None] = [None] * len(events)
    parsed: list[tuple[int, UsageEvent]] = []
    for i, data in enumerate(events):
        try:
            parsed.append((i, UsageEvent.model_validate_json(data)))
        except ValidationError as exc:
            outcomes[i] = PoisonEvent(f"not a usage event: {exc.errors()[0]['msg']}")
    return outcomes, parsed


# Outcome of one event of a batch: None when committed (it is acked), else why not.
BatchHandler = Callable[[list[bytes]], Awaitable[Sequence[BaseException | None]]]

RETRY_DELAY_MAX_S = 30.0


async def consume_usage_event_batches(
    js: JetStreamContext,
    durable: str,
    handle_batch: BatchHandler,
    stop: asyncio.Event,
    batch: int = 256,
    linger_s: float = 0.05,
    gather_s: float = 0.0,
    pending: Callable[[int], None] | None = None,
) -> None:
    """Pull usage events with a durable consumer and hand every fetched batch to `handle_batch` at
    once (so it can commit the batch in one transaction); ack each event only after it has
    committed. A crash between commit and ack redelivers the event, so handlers must be idempotent.

    A fetch waits for the first event, then takes as many of those already in the stream behind it
    as the batch holds (JetStream tells each delivery how many are pending): under load batches
    grow up to `batch`. With `gather_s` > 0, a batch that is not full yet waits that long after its
    first event for those that follow: at a few hundred events a second, one transaction and one
    wake-up then serve many events instead of one each, for at most `gather_s` more delay.
    An event the handler could not commit is redelivered after a delay growing with its attempts
    (a poison event never holds the others back); a PoisonEvent is terminated.
    `pending` is told how many events wait behind each fetch (0 when a fetch finds none): the
    consumer's lag, for its metric.
    """
    sub = await _usage_subscription(js, durable)
    try:
        while not stop.is_set():
            try:
                messages = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                if pending is not None:
                    pending(0)
                continue
            except Exception:
                log.warning("fetching usage events failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            waiting = _pending_after(messages[-1])
            if pending is not None:
                pending(waiting)
            ready = min(waiting, batch - 1)
            if gather_s > 0 and ready < batch - 1:
                await asyncio.sleep(gather_s)
                # Whatever arrived meanwhile is returned at once; if nothing did, this gives up
                # after a short linger instead of waiting for the next event.
                with contextlib.suppress(Exception):
                    messages += await sub.fetch(batch - 1, timeout=min(linger_s, gather_s))
            elif ready > 0:
                # Those are in the stream already, so this returns at once (linger_s only bounds it
                # should some have gone to another consumer replica meanwhile).
                with contextlib.suppress(Exception):  # the first one alone is a batch too
                    messages += await sub.fetch(ready, timeout=linger_s)
            # Each event goes on with the trace of the request it records, in a span of its own.
            spans = tracing.consumer_spans(
                f"process {subjects.USAGE_REQUEST_COMPLETED}",
                messages,
                _nats_attributes(
                    subjects.USAGE_REQUEST_COMPLETED,
                    **{"messaging.consumer.group.name": durable, "messaging.batch.message_count": len(messages)},
                ),
            )
            try:
                outcomes = await handle_batch([msg.data for msg in messages])
            except Exception as exc:
                log.exception("usage event batch handling failed; will be redelivered")
                outcomes = [exc] * len(messages)
            tracing.end_consumer_spans(spans, list(outcomes))
            for msg, outcome in zip(messages, outcomes, strict=True):
                if outcome is None:
                    await msg.ack()
                elif isinstance(outcome, PoisonEvent):
                    log.error(
                        "usage event can never be handled; terminated (it stays in the stream)",
                        extra={"fields": {"stream_seq": msg.metadata.sequence.stream, "error": str(outcome)}},
                    )
                    await msg.term()
                else:
                    await msg.nak(delay=_retry_delay(msg))
    finally:
        await sub.unsubscribe()


def _pending_after(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_pending or 0)
    except Exception:
        return 0


def _retry_delay(msg: Msg) -> float:
    try:
        attempts = msg.metadata.num_delivered or 1
    except Exception:
        attempts = 1
    return min(2.0 ** (attempts - 1), RETRY_DELAY_MAX_S)


async def publish_usage_event(js: JetStreamContext, event: UsageEvent) -> None:
    """Publish once, retrying through NATS hiccups; JetStream drops duplicates of the same id.
    Billing's and usage's consumers go on with the trace of the request (a PRODUCER span here)."""
    subject = subjects.USAGE_REQUEST_COMPLETED
    with tracing.span(f"publish {subject}", tracing.SpanKind.PRODUCER, attributes=_nats_attributes(subject)) as sent:
        headers = tracing.headers_with_context(
            {subjects.MSG_ID_HEADER: event.request_id, subjects.REQUEST_ID_HEADER: event.request_id}
        )
        for attempt in range(USAGE_PUBLISH_ATTEMPTS):
            try:
                await js.publish(subject, encode(event), headers=headers, timeout=5)
                return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError):
                await asyncio.sleep(min(0.2 * 2**attempt, 5))
        tracing.mark_failed(sent, "not published")
    log.error("usage event could not be published; its hold will be released by the sweeper")
