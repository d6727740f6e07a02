"""A gateway replica's credit: each request's worst case covered from a lease billing granted this
replica (docs/billing.md "Credit leases"), the bookkeeping in lexora_gateway.admission.lease_book.

- `cover` commits a request's worst case to its account's (or limited key's) current lease, or,
  when that cannot, acquires a new lease from billing (one acquisition in flight per scope; the
  others wait for it), sending the retired lease's return along so its free part counts. A refusal
  is billing's 402, as a reservation's was. No request starts without covered credit.
- `finish` is told each request's end: its exact cost (from the router's final chunk), or None
  when the gateway never saw it.
- a periodic pass retires leases past their use window or idle for `idle_s` and returns them, so
  a quiet account's credit is back within seconds; billing's recall (another
  replica was refused while this one holds credit on the account) retires the account's leases at
  once; `close` returns every lease at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lexora_billing.client import BillingClient
from lexora_contracts import subjects
from lexora_contracts.messages import Identity, LeaseAcquireRequest, LeaseRecall, LeaseReturnRequest
from lexora_contracts.money import ceil_micro
from lexora_gateway.admission.lease_book import LeaseBook, Scope

log = logging.getLogger("lexora.gateway.credit")


class CreditLeases:
    def __init__(
        self,
        nc: NATS,
        billing: BillingClient,
        *,
        use_s: float,
        settle_within_s: float,
        idle_s: float = 2.0,
        holder: str | None = None,
    ):
        """`use_s`: how long a lease covers new requests; `idle_s`: a lease that covered none for
        this long is returned; `settle_within_s`: how long after its use the last request it
        covered may still be charged (the job timeout plus grace). Billing expires a lease after
        `use_s` + `settle_within_s`."""
        self.holder = holder or f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        self.book = LeaseBook()
        self._nc = nc
        self._billing = billing
        self._use_s = use_s
        self._settle_within_s = settle_within_s
        self._idle_s = idle_s
        self._tick_s = min(1.0, idle_s / 2)
        self._locks: dict[Scope, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._subscription = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(subjects.BILLING_LEASE_RECALLED, cb=self._on_recall)
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        """Return every lease (what is in flight stays held until billing settles or expires it)."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await asyncio.gather(*(self._return(r) for r in self.book.close()))

    async def cover(self, identity: Identity, request_id: str, worst_micro: int) -> str:
        """Cover a request's worst case; the id of the lease covering it, or billing's 402."""
        scope = scope_of(identity)
        lease_id = self.book.cover(scope, request_id, worst_micro, time.monotonic())
        if lease_id is not None:
            return lease_id
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            lease_id = self.book.cover(scope, request_id, worst_micro, time.monotonic())  # another acquired
            if lease_id is not None:
                return lease_id
            replaces = self.book.retire_current(scope)
            new_id = f"lease_{uuid.uuid4().hex}"
            started = time.monotonic()
            grant = await self._billing.acquire_lease(
                LeaseAcquireRequest(
                    lease_id=new_id,
                    holder=self.holder,
                    account_id=identity.account_id,
                    key_id=scope[1],
                    key_spend_limit_micro=identity.spend_limit_micro if scope[1] else None,
                    need_micro=worst_micro,
                    ttl_s=self._use_s + self._settle_within_s,
                    replaces=replaces,
                )
            )
            now = time.monotonic()
            stray = self.book.install(scope, grant.lease_id, grant.amount_micro, started + self._use_s, now)
            if stray is not None:
                self._send(stray)
            lease_id = self.book.cover(scope, request_id, worst_micro, time.monotonic())
            assert lease_id is not None, "a new lease covers the request it was acquired for"
            return lease_id

    def finish(self, request_id: str, cost_pico: int | None) -> None:
        """A covered request ended: its exact cost, or None when unknown. Idempotent."""
        final = self.book.finish(request_id, None if cost_pico is None else ceil_micro(cost_pico))
        if final is not None:
            self._send(final)

    def _send(self, request: LeaseReturnRequest) -> None:
        task = asyncio.create_task(self._return(request))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _return(self, request: LeaseReturnRequest) -> None:
        try:
            await self._billing.return_lease(request)
        except Exception:
            # Safe to lose: billing keeps holding the credit until the lease expires.
            log.warning("returning a credit lease failed", extra={"fields": {"lease_id": request.lease_id}})

    async def _on_recall(self, msg: Msg) -> None:
        recall = LeaseRecall.model_validate_json(msg.data)
        if recall.holder == self.holder:
            return
        for request in self.book.recall(recall.account_id):
            self._send(request)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                for request in self.book.due(time.monotonic(), self._settle_within_s, self._idle_s):
                    self._send(request)
            except Exception:
                log.exception("the credit lease pass failed")


def scope_of(identity: Identity) -> Scope:
    """Leases are per account, and per key for a key with a spend limit (held against it too)."""
    return (identity.account_id, identity.key_id if identity.spend_limit_micro is not None else None)
