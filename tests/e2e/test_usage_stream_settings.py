"""The usage stream's settings, against a real nats-server: a stream left by an older version is
brought to this version's de-duplication window and retention, and duplicates are still dropped;
an event is kept until every consumer has acked it, and no longer."""

from __future__ import annotations

import nats
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from lexora_contracts import subjects
from lexora_contracts.messages import UsageEvent
from lexora_runtime.bus import (
    USAGE_CONSUMERS,
    USAGE_DEDUP_WINDOW_S,
    USAGE_RETENTION_S,
    ensure_usage_stream,
    publish_usage_event,
    usage_consumer_config,
)
from support.usage_events import usage_event


def _event() -> UsageEvent:
    return usage_event("req_stream_settings", "acct_stream")


async def test_an_older_stream_gets_this_versions_window_and_keeps_its_events(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=subjects.USAGE_STREAM,
                subjects=subjects.USAGE_STREAM_SUBJECTS,
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=3 * 24 * 3600,
                duplicate_window=3600,
            )
        )
        await publish_usage_event(js, _event())

        await ensure_usage_stream(js)

        info = await js.stream_info(subjects.USAGE_STREAM)
        assert info.config.duplicate_window == USAGE_DEDUP_WINDOW_S
        assert info.config.max_age == USAGE_RETENTION_S
        assert info.config.retention == RetentionPolicy.INTEREST
        assert info.state.messages == 1, "kept: no consumer has acked it yet"
        await publish_usage_event(js, _event())  # a publisher's retry of the same event
        assert (await js.stream_info(subjects.USAGE_STREAM)).state.messages == 1
    finally:
        await nc.drain()


async def test_a_new_stream_is_created_with_this_versions_settings(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_usage_stream(js)
        await ensure_usage_stream(js)  # every service calls it at start: the second is a no-op
        info = await js.stream_info(subjects.USAGE_STREAM)
        assert (info.config.duplicate_window, info.config.max_age) == (USAGE_DEDUP_WINDOW_S, USAGE_RETENTION_S)
        assert info.config.retention == RetentionPolicy.INTEREST
        consumers = await js.consumers_info(subjects.USAGE_STREAM)
        assert sorted(c.name for c in consumers) == sorted(USAGE_CONSUMERS)
    finally:
        await nc.drain()


async def test_an_event_is_kept_until_every_consumer_has_acked_it(nats_url: str) -> None:
    """Published before billing or usage ever started, an event waits for both; acked by both, the
    stream no longer holds it (nats-server's memory and disk follow the backlog, not the traffic)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_usage_stream(js)  # the router, say, starting first
        await publish_usage_event(js, _event())
        assert (await js.stream_info(subjects.USAGE_STREAM)).state.messages == 1

        for i, durable in enumerate(USAGE_CONSUMERS):
            sub = await js.pull_subscribe(
                subjects.USAGE_REQUEST_COMPLETED,
                durable=durable,
                stream=subjects.USAGE_STREAM,
                config=usage_consumer_config(durable),
            )
            (msg,) = await sub.fetch(1, timeout=5)
            assert UsageEvent.model_validate_json(msg.data).request_id == "req_stream_settings"
            await msg.ack_sync()
            left = (await js.stream_info(subjects.USAGE_STREAM)).state.messages
            assert left == (0 if i == len(USAGE_CONSUMERS) - 1 else 1)
    finally:
        await nc.drain()
