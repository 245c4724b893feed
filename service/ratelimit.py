"""Inbound rate limiting: a token bucket per connection, plus a flood detector."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("_at", "_clock", "_tokens", "burst", "per_s")

    def __init__(self, per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.per_s = per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Take one token; return 0 if allowed, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.per_s


class FloodDetector:
    """Counts refusals in a sliding window; `hit()` is true once there were too many."""

    __slots__ = ("_clock", "_hits", "limit", "window_s")

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: deque[float] | None = None  # made on the first refusal: most clients have none

    def hit(self) -> bool:
        now = self._clock()
        if self._hits is None:
            self._hits = deque(maxlen=self.limit)
        self._hits.append(now)
        return len(self._hits) == self.limit and now - self._hits[0] <= self.window_s
