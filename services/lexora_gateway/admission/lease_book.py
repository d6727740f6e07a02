"""The credit leases a gateway replica holds, in memory, and what each request took from them.
Pure bookkeeping, no I/O: lexora_gateway.admission.credit_leases talks to billing.

A lease covers requests while its free part (what billing granted less what it has committed)
holds their worst-case cost. A request commits its worst case when it starts; when it ends, the
commitment becomes its exact cost rounded up to the micro-USD (never less than billing will charge
for it), or stays the worst case when the gateway never saw the cost (the client left, the job
timed out). `committed` is therefore always at least what billing may still charge against the
lease, and a return never gives back more than `amount − committed`: the invariant that keeps an
account out of overdraft.

A lease is *current* for its scope (an account, or an account's key with a spend limit) until its
use window ends, another replaces it, or billing recalls it; it is then *retired*: it covers no new
request, and a final return (`LeaseReturnRequest`, `final`, with the number of requests it
covered) gives back its free part at once. When its last request ends, a second final return gives
back what those requests did not cost, and the book forgets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lexora_contracts.messages import LeaseReturnRequest

Scope = tuple[str, str | None]  # (account id, key id when the key has a spend limit)


@dataclass
class Lease:
    lease_id: str
    scope: Scope
    amount_micro: int
    use_until: float  # no request starts on it after this (monotonic seconds)
    last_used: float = 0.0  # when it last covered a request (or was granted)
    committed_micro: int = 0
    requests: int = 0  # requests it covered, each ending in one usage event
    in_flight: dict[str, tuple[int, float]] = field(default_factory=dict)  # request id -> (worst case, started)
    retired: bool = False

    @property
    def free_micro(self) -> int:
        return self.amount_micro - self.committed_micro

    def final_return(self) -> LeaseReturnRequest:
        return LeaseReturnRequest(
            lease_id=self.lease_id, keep_micro=self.committed_micro, requests=self.requests, final=True
        )


class LeaseBook:
    def __init__(self) -> None:
        self._current: dict[Scope, Lease] = {}
        self._retired: dict[str, Lease] = {}
        self._requests: dict[str, Lease] = {}  # request id -> the lease covering it

    def cover(self, scope: Scope, request_id: str, worst_micro: int, now: float) -> str | None:
        """Commit a request's worst case to the scope's current lease; its id, or None when there
        is none that can (then acquire one)."""
        lease = self._current.get(scope)
        if lease is None or now >= lease.use_until or lease.free_micro < worst_micro:
            return None
        lease.committed_micro += worst_micro
        lease.requests += 1
        lease.last_used = now
        lease.in_flight[request_id] = (worst_micro, now)
        self._requests[request_id] = lease
        return lease.lease_id

    def retire_current(self, scope: Scope) -> LeaseReturnRequest | None:
        """Retire the scope's current lease (before acquiring its replacement); its final return."""
        lease = self._current.pop(scope, None)
        return self._retire(lease) if lease is not None else None

    def install(
        self, scope: Scope, lease_id: str, amount_micro: int, use_until: float, now: float = 0.0
    ) -> LeaseReturnRequest | None:
        """A lease billing granted becomes the scope's current one. The caller retired the one it
        replaces (`retire_current`) and sent its return along; should another be current after all,
        it is retired, and its final return is returned."""
        previous = self._current.pop(scope, None)
        self._current[scope] = Lease(lease_id, scope, amount_micro, use_until, last_used=now)
        return self._retire(previous) if previous is not None else None

    def finish(self, request_id: str, cost_micro: int | None) -> LeaseReturnRequest | None:
        """A request ended: its exact cost (rounded up to the micro-USD), or None when unknown (its
        worst case stays committed). Idempotent. Returns the final return to send when this was
        the last request of a retired lease."""
        lease = self._requests.pop(request_id, None)
        if lease is None:
            return None
        worst, _ = lease.in_flight.pop(request_id)
        if cost_micro is not None:
            lease.committed_micro += cost_micro - worst
        if lease.retired and not lease.in_flight:
            self._retired.pop(lease.lease_id, None)
            return lease.final_return()
        return None

    def recall(self, account_id: str) -> list[LeaseReturnRequest]:
        """Billing recalled the account's credit: retire its current leases; their final returns."""
        scopes = [scope for scope in self._current if scope[0] == account_id]
        return [self._retire(self._current.pop(scope)) for scope in scopes]

    def due(self, now: float, stale_after_s: float, idle_s: float = float("inf")) -> list[LeaseReturnRequest]:
        """What the periodic pass returns: current leases past their use window, or that covered
        no request for `idle_s`, are retired, and requests in flight longer than `stale_after_s`
        (their end was never reported) are finished at their worst case."""
        returns = [
            self._retire(self._current.pop(scope))
            for scope, lease in list(self._current.items())
            if now >= lease.use_until or now - lease.last_used >= idle_s
        ]
        stale = [rid for rid, lease in self._requests.items() if now - lease.in_flight[rid][1] > stale_after_s]
        for request_id in stale:
            final = self.finish(request_id, None)
            if final is not None:
                returns.append(final)
        return returns

    def close(self) -> list[LeaseReturnRequest]:
        """Shutting down: every current lease retired, and a final return for every retired lease
        (what is still in flight stays committed; billing's sweeper releases it at expiry)."""
        returns = {lease.lease_id: lease.final_return() for lease in self._retired.values()}
        for scope in list(self._current):
            final = self._retire(self._current.pop(scope))
            returns[final.lease_id] = final
        self._retired.clear()
        return list(returns.values())

    def lease_of(self, request_id: str) -> str | None:
        lease = self._requests.get(request_id)
        return lease.lease_id if lease is not None else None

    def current(self, scope: Scope) -> Lease | None:
        return self._current.get(scope)

    def _retire(self, lease: Lease) -> LeaseReturnRequest:
        lease.retired = True
        if lease.in_flight:
            self._retired[lease.lease_id] = lease
        return lease.final_return()
