"""Prefix affinity: requests that open with the same long prompt go to the replica that served that
prompt last, whose engine likely still holds its KV cache (as llm-d's endpoint picker and the vLLM
production stack's router do). Pure.

A prompt (the rendered roles and texts of its messages, or a raw prompt) is cut into blocks of
BLOCK_CHARS characters, up to MAX_PREFIX_CHARS; each full block gets a key that hashes it together
with every block before it, so two prompts share the keys of the blocks they share. The replica a
request went to is remembered under each of its keys, and the next request goes where its longest
remembered prefix went. A prompt shorter than one block has no key: too short for its cache to be
worth a detour.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from lexora_contracts.messages import ChatTurn

BLOCK_CHARS = 256
MAX_PREFIX_CHARS = 4096


def prefix_keys(messages: list[ChatTurn], raw_prompt: str | None = None) -> tuple[str, ...]:
    """The keys of the prompt's full blocks, shortest prefix first (empty for a short prompt)."""
    if raw_prompt is not None:
        text = raw_prompt[:MAX_PREFIX_CHARS]
    else:
        parts: list[str] = []
        size = 0
        for message in messages:
            part = f"{message.role}\n{message.content}\n"
            parts.append(part)
            size += len(part)
            if size >= MAX_PREFIX_CHARS:
                break
        text = "".join(parts)[:MAX_PREFIX_CHARS]
    keys: list[str] = []
    chain = hashlib.blake2b(digest_size=12)
    for start in range(0, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):
        chain.update(text[start : start + BLOCK_CHARS].encode())
        keys.append(chain.copy().hexdigest())
    return tuple(keys)


class AffinityMap:
    """Which endpoint served a prefix last, by (scope, prefix key); the least recently used entry
    goes first beyond `capacity`."""

    def __init__(self, capacity: int = 50_000):
        self._capacity = capacity
        self._last: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, scope: str, key: str) -> str | None:
        found = self._last.get((scope, key))
        if found is not None:
            self._last.move_to_end((scope, key))
        return found

    def remember(self, scope: str, key: str, endpoint: str) -> None:
        self._last[(scope, key)] = endpoint
        self._last.move_to_end((scope, key))
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)
