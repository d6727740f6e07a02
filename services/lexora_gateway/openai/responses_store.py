"""Stored responses (`store: true`), in the NATS KV bucket `lexora-responses`: one entry per response
id, holding the account it belongs to, the Response object and the input items it continued from
(the previous response's, then its own), so that `previous_response_id` can carry the conversation
on. Entries expire after RESPONSES_TTL_S. Another account's id reads as absent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from lexora_contracts.subjects import RESPONSES_BUCKET

RESPONSES_TTL_S = 30 * 24 * 3600
log = logging.getLogger(__name__)


async def responses_bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(RESPONSES_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=RESPONSES_BUCKET, history=1, ttl=RESPONSES_TTL_S)


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]

    def conversation(self) -> list[dict[str, Any]]:
        """What a response continuing this one follows: its input, then its output."""
        return [*self.input_items, *self.response.get("output", [])]


class ResponseStore:
    def __init__(self, kv: KeyValue):
        self._kv = kv

    async def put(self, account_id: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Keep a response. One too large for a NATS message is not kept (logged): the answer the
        client has is the same, a later previous_response_id to it is a 404."""
        value = orjson.dumps({"account_id": account_id, "response": response, "input_items": input_items})
        try:
            await self._kv.put(response["id"], value)
        except Exception:  # the payload limit, or NATS gone: the answer stands regardless
            log.warning("response %s not stored (%d bytes)", response["id"], len(value), exc_info=True)

    async def get(self, account_id: str, response_id: str) -> StoredResponse | None:
        if not _valid_key(response_id):
            return None
        try:
            entry = await self._kv.get(response_id)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if not entry.value:
            return None
        stored = orjson.loads(entry.value)
        if stored.get("account_id") != account_id:
            return None
        return StoredResponse(stored["response"], stored.get("input_items", []))

    async def delete(self, account_id: str, response_id: str) -> bool:
        if await self.get(account_id, response_id) is None:
            return False
        await self._kv.delete(response_id)
        return True


def _valid_key(key: str) -> bool:
    """A KV key: what our ids are made of, and no more (a wildcard or dot would address others)."""
    return 0 < len(key) <= 128 and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
