"""The usage stream's settings, against a real nats-server: a stream left by an older version is
brought to this version's de-duplication window and retention, and duplicates are still dropped."""

from __future__ import annotations

import nats
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from lexora_contracts import subjects
from lexora_contracts.messages import UsageEvent
from lexora_runtime.bus import USAGE_DEDUP_WINDOW_S, USAGE_RETENTION_S, ensure_usage_stream, publish_usage_event
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
        assert info.state.messages == 1
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
    finally:
        await nc.drain()
