"""Keeps full garbage collections short however many connections are open.

A full collection walks every tracked object that is not frozen. A connection is ~140 of
them (the ASGI stack's coroutines, the protocol and its parser, the session), so with
1,000 connections one takes 35-40 ms on a fast core and several times that on a slow one:
a stall that every client sees, and the largest part of the latency tail
(docs/performance.md, "The garbage collector"). Yet a connection's objects live as long as
the connection, and most connections live long.

So every half second, once 50 or more connections have come since the last freeze,
everything the collector tracks is frozen (`gc.freeze()`: moved out of its generations,
which later full collections skip; O(1)), after a collection of the young generations so
that little garbage is frozen with it. A ramp of a thousand connections is frozen as it
comes, so even the full collections its own promotions trigger stay short. Thresholds and
everything else stay the interpreter's.

What is frozen is never collected: a closed connection's reference cycles (~60 objects)
stay in memory until unfrozen. Once the connections closed since the first freeze pass a
quarter of those frozen (at least 50), and in any case ten minutes after the first freeze (whatever
other garbage a freeze caught), everything is unfrozen, and the next full collection (as
the interpreter schedules it) reclaims them; only after one has run does a freeze come
again. So between thaws the frozen garbage is bounded, and a thaw costs one full
collection of the old length: what every full collection cost before.

The process owns its collector, so only `stockpush serve` turns this on (service.cli), not
an app embedded elsewhere, nor the tests' in-process servers.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHECK_S = 0.5  # how often the counts are looked at
MIN_NEW = 50  # fewer new connections than this are not worth a freeze
THAW_SHARE = 0.25  # unfreeze once this share of the frozen connections has closed
THAW_AFTER_S = 600.0  # and at the latest this long after the first freeze since the last thaw


def _full_collections() -> int:
    return int(gc.get_stats()[-1]["collections"])


def _freeze() -> None:
    gc.collect(1)  # the young generations only: ~1 ms, so their garbage is not frozen
    gc.freeze()


@dataclass
class GcHooks:
    """The collector calls the freezer makes; tests pass their own."""

    freeze: Callable[[], None] = _freeze
    unfreeze: Callable[[], None] = gc.unfreeze
    full_collections: Callable[[], int] = _full_collections


class ConnectionFreezer:
    """Freezes new connections' objects and unfreezes them after enough have closed.

    `check(connections, opened, closed)` is called every CHECK_S with the current count of
    connections and running totals of those opened and closed.
    """

    def __init__(self, hooks: GcHooks | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._hooks = hooks or GcHooks()
        self._clock = clock
        self.frozen = 0  # connections open at the last freeze; 0 while nothing of theirs is frozen
        self.thaws = 0
        self._opened_at_freeze = 0  # opened total at the last freeze: who came since is not frozen
        self._closed_at_first = 0  # closed total at the first freeze since the last thaw
        self._thawed_at: int | None = None  # full collections counted when last unfrozen
        self._first_freeze = 0.0  # when the first freeze since the last thaw came

    def check(self, connections: int, opened: int, closed: int) -> None:
        now = self._clock()
        gone = closed - self._closed_at_first  # closed since the first freeze: their cycles may be frozen
        if self.frozen and (gone >= max(MIN_NEW, self.frozen * THAW_SHARE) or now - self._first_freeze >= THAW_AFTER_S):
            self._hooks.unfreeze()
            self.thaws += 1
            log.debug("Unfroze: %d connections closed since the first freeze (%d frozen)", gone, self.frozen)
            self.frozen = 0
            self._thawed_at = self._hooks.full_collections()
            return
        if self._thawed_at is not None and self._hooks.full_collections() <= self._thawed_at:
            return  # what the thaw released is not reclaimed yet: freezing now would keep it
        new = connections if not self.frozen else opened - self._opened_at_freeze
        if new >= MIN_NEW:
            self._hooks.freeze()
            if not self.frozen:
                self._first_freeze, self._closed_at_first = now, closed
            self.frozen = connections
            self._opened_at_freeze = opened
            self._thawed_at = None
            log.debug("Froze the objects of %d connections", connections)
