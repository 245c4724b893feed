"""Wall-clock access for feeds, injectable so tests run hours of market in no time.

Feeds generate in market time and only ask the clock how much wall time has passed and to
sleep; with `VirtualClock`, sleeping advances a counter instead of waiting (trio's MockClock
idea), so `run()` behaves exactly as in production without taking any time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

# Pacing granularity: events due within this much wall time go out together, so a busy feed
# wakes up at most ~50 times a second instead of once per event.
MIN_SLEEP_S = 0.02
# After a stall longer than this (a suspended laptop, a debugger), the feed resumes at normal
# pace instead of bursting everything it "missed" at once.
MAX_CATCH_UP_S = 1.0


class Clock(Protocol):
    def time(self) -> float:
        """Unix wall time in seconds (used for "today")."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back (used for pacing)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock:
    """Wall time that passes only when someone sleeps."""

    def __init__(self, now: float = 1_741_012_345.0) -> None:
        self._origin = now
        self._elapsed = 0.0
        self.sleeps = 0

    def time(self) -> float:
        return self._origin + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self._elapsed += max(0.0, seconds)
        # Still a scheduling point, so other tasks (and cancellation) get their turn.
        await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()
