"""In-process bus: synchronous fan-out to handlers and a bounded replay ring per stream."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from service.bus import Handler, ReplayRefused
from service.events import BusMessage, Event, StreamKey, StreamRemoved, StreamReset

log = logging.getLogger(__name__)

_NOTHING: dict[str, Any] = {}  # replayed events are only ever sent: their wire is all they need


# What the ring keeps of an event: a plain tuple of atomic values. CPython's garbage
# collector stops tracking such tuples, so a window of millions of events costs full
# collections nothing. Event objects (a tuple subclass, holding dicts) stay tracked, and
# a ring of them made full collections take long enough to show in latency.
_Kept = tuple[int, int, str]  # seq, ts, wire


class _Ring:
    __slots__ = ("ch", "epoch", "events", "last_seq", "sym")

    def __init__(self, ch: str, sym: str, epoch: str, window: int) -> None:
        self.ch = ch
        self.sym = sym
        self.epoch = epoch
        self.last_seq = 0
        self.events: deque[_Kept] = deque(maxlen=window)


class MemoryBus:
    def __init__(self, replay_window: int) -> None:
        self._window = replay_window
        self._handlers: list[Handler] = []
        self._rings: dict[StreamKey, _Ring] = {}

    def publish(self, message: BusMessage) -> None:
        if isinstance(message, StreamReset):
            self._rings[message.key] = _Ring(message.ch, message.sym, message.epoch, self._window)
        elif isinstance(message, StreamRemoved):
            self._rings.pop(message.key, None)
        else:
            ring = self._rings[message.key]
            ring.events.append((message.seq, message.ts, message.wire))
            ring.last_seq = message.seq
        for handler in self._handlers:
            try:
                handler(message)
            except Exception:
                # One broken consumer must not stop delivery to the others.
                log.exception("Bus handler %r failed on %r", handler, message)

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)

    def replay(self, key: StreamKey, epoch: str, after_seq: int) -> list[Event]:
        ring = self._rings.get(key)
        if ring is None:
            raise ReplayRefused("UNKNOWN_STREAM")
        if epoch != ring.epoch:
            raise ReplayRefused("EPOCH_CHANGED")
        if after_seq > ring.last_seq:
            raise ReplayRefused("SEQ_AHEAD")
        if after_seq == ring.last_seq:
            return []
        first = ring.events[0][0] if ring.events else ring.last_seq + 1
        if after_seq + 1 < first:
            raise ReplayRefused("TOO_OLD")
        ch, sym, epoch = ring.ch, ring.sym, ring.epoch
        return [
            Event(ch, sym, epoch, seq, ts, _NOTHING, _NOTHING, wire)
            for seq, ts, wire in islice(ring.events, after_seq + 1 - first, None)
        ]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()
