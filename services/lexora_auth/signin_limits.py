"""Sign-in attempt limiting: failed attempts in a sliding window, per email and per client address.
Pure: the clock is an argument; the auth process keeps one `SignInLimiter` in memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 15 * 60.0
MAX_FAILURES_PER_EMAIL = 5
MAX_FAILURES_PER_CLIENT = 20
MAX_TRACKED = 100_000  # bounds memory under a spray of made-up emails


@dataclass
class SignInLimiter:
    window_s: float = WINDOW_S
    per_email: int = MAX_FAILURES_PER_EMAIL
    per_client: int = MAX_FAILURES_PER_CLIENT
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, name: str, now: float) -> deque[float]:
        times = self._failures.get(name)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[name]
        return times

    def retry_after(self, email: str, client: str, now: float) -> float | None:
        """Seconds until another attempt is allowed, or None when one is allowed now."""
        waits = []
        for name, allowed in ((f"email:{email}", self.per_email), (f"client:{client}", self.per_client)):
            times = self._recent(name, now)
            if len(times) >= allowed:
                waits.append(times[-allowed] + self.window_s - now)
        return max(waits) if waits else None

    def failed(self, email: str, client: str, now: float) -> None:
        if len(self._failures) >= MAX_TRACKED:
            self._failures.clear()
        for name in (f"email:{email}", f"client:{client}"):
            self._failures.setdefault(name, deque()).append(now)

    def succeeded(self, email: str) -> None:
        self._failures.pop(f"email:{email}", None)
