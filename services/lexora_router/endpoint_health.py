"""What this router has seen of each model's engine on each endpoint. Pure: the clock is an argument.

Triton's own readiness stays green when a Python-backend stub dies, so health here is what real
requests showed: a request or probe that came back is a success, an engine failure or an
unreachable endpoint is a failure. The book says which endpoints to avoid, which to probe (those
not seen serving lately, and every unhealthy one, to see it recover), and which observations to
publish to the endpoint-health bucket: every change of state, the first observation of each
endpoint (the local stack's warm-up waits for it), and an unhealthy state again before its entry
would expire.
"""

from __future__ import annotations

from dataclasses import dataclass

from lexora_contracts.registry import EndpointHealth

REASON_CHARS = 300  # an engine's error can be long (a traceback); the first lines say what broke


@dataclass
class _Seen:
    model_id: str
    endpoint: str
    healthy: bool
    since: float
    reason: str | None
    last_ok: float
    published_at: float


class HealthBook:
    def __init__(self, observer: str, republish_s: float = 60.0):
        self._observer = observer
        self._republish_s = republish_s
        # By (model id, endpoint name): looked up on every request, so no key is built or validated.
        self._seen: dict[tuple[str, str], _Seen] = {}

    def healthy(self, model_id: str, endpoint: str) -> bool:
        """True unless this router saw the engine fail and has not seen it serve since."""
        seen = self._seen.get((model_id, endpoint))
        return seen is None or seen.healthy

    def reason(self, model_id: str, endpoint: str) -> str | None:
        seen = self._seen.get((model_id, endpoint))
        return None if seen is None or seen.healthy else seen.reason

    def served(self, model_id: str, endpoint: str, now: float) -> EndpointHealth | None:
        """A request or probe came back from the engine. Returns what to publish, if anything."""
        key = (model_id, endpoint)
        seen = self._seen.get(key)
        if seen is not None and seen.healthy:
            seen.last_ok = now
            return None
        self._seen[key] = _Seen(model_id, endpoint, True, now, None, now, now)
        return self._record(self._seen[key], now)

    def failed(self, model_id: str, endpoint: str, reason: str, now: float) -> EndpointHealth | None:
        """The engine could not serve. Returns what to publish, if anything."""
        key = (model_id, endpoint)
        seen = self._seen.get(key)
        reason = reason.strip()[:REASON_CHARS] or "the engine failed"
        if seen is not None and not seen.healthy:
            seen.reason = reason
            return None
        self._seen[key] = _Seen(model_id, endpoint, False, now, reason, 0.0 if seen is None else seen.last_ok, now)
        return self._record(self._seen[key], now)

    def current(self, model_id: str, endpoint: str, now: float) -> EndpointHealth | None:
        """This router's view of the endpoint, to publish where readers believe otherwise."""
        seen = self._seen.get((model_id, endpoint))
        return None if seen is None else self._record(seen, now)

    def needs_probe(self, model_id: str, endpoint: str, now: float, interval_s: float) -> bool:
        """Unhealthy (to see it recover), never seen, or not seen serving for `interval_s`."""
        seen = self._seen.get((model_id, endpoint))
        return seen is None or not seen.healthy or now - seen.last_ok >= interval_s

    def due_again(self, now: float) -> list[EndpointHealth]:
        """Unhealthy states whose published entry is getting old: published again so that readers
        (who age entries out) keep avoiding the endpoint."""
        due = [s for s in self._seen.values() if not s.healthy and now - s.published_at >= self._republish_s]
        return [self._record(seen, now) for seen in due]

    def forget_all_but(self, keys: set[tuple[str, str]]) -> None:
        """Drop what is known of endpoints no longer in the registry: keep (model id, endpoint name)s."""
        for key in [k for k in self._seen if k not in keys]:
            del self._seen[key]

    def snapshot(self) -> dict[str, str]:
        """Each endpoint's state in words, for the router's health reply."""
        return {
            f"{s.model_id}@{s.endpoint}": "ok" if s.healthy else f"unhealthy: {s.reason}" for s in self._seen.values()
        }

    def _record(self, seen: _Seen, now: float) -> EndpointHealth:
        seen.published_at = now
        return EndpointHealth(
            model_id=seen.model_id,
            endpoint=seen.endpoint,
            healthy=seen.healthy,
            reason=seen.reason,
            since=seen.since,
            checked_at=now,
            observer=self._observer,
        )
