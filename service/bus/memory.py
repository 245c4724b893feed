"""In-process bus: synchronous fan-out to handlers and a bounded replay ring per stream."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from service.bus import Handler, ReplayRefused
from service.events import BusMessage, Event, StreamKey, StreamRemoved, StreamReset

log = logging.getLogger(__name__)

_NOTHING: dict[str, Any] = {}  # replayed events are only ever sent: their wire is all they need

# Events per packed segment of a ring. The garbage collector walks every item of every list
# or deque it tracks on each full collection, even items it does not track itself: a
# window of a million events kept as a million strings made each full collection take
# ~50-80 ms, stalling every client. Packed, the window is a few thousand strings.
SEGMENT = 64


class _Ring:
    """One stream's replay window: its newest wires, and older ones packed by SEGMENT.

    A wire never contains a newline (JSON escapes them), so a packed segment is its
    SEGMENT wires joined by newlines: one string, nothing for the collector to walk, and
    without the per-string overhead. Seqs are consecutive, so a wire's seq is its position.
    """

    __slots__ = ("ch", "epoch", "first_seq", "last_seq", "segments", "sym", "tail", "window")

    def __init__(self, ch: str, sym: str, epoch: str, window: int) -> None:
        self.ch = ch
        self.sym = sym
        self.epoch = epoch
        self.window = window
        self.last_seq = 0
        self.first_seq = 1  # seq of the oldest wire kept (the first of segments[0], or of tail)
        self.segments: deque[str] = deque()
        self.tail: list[str] = []

    def append(self, seq: int, wire: str) -> None:
        tail = self.tail
        if seq != self.last_seq + 1:  # not the next one (never, from the sequencer): start over
            self.segments.clear()
            tail.clear()
            self.first_seq = seq
        tail.append(wire)
        self.last_seq = seq
        if len(tail) == SEGMENT:
            self.segments.append("\n".join(tail))
            tail.clear()
            # Keep whole segments while the window still needs them: at least `window`
            # events stay, and `oldest()` hides the ones beyond it.
            while self.segments and self.first_seq + SEGMENT <= seq - self.window + 1:
                self.segments.popleft()
                self.first_seq += SEGMENT

    def oldest(self) -> int:
        """The oldest seq that may be replayed: the window is a count of events."""
        return max(self.first_seq, self.last_seq - self.window + 1)

    def after(self, after_seq: int) -> list[str]:
        """The wires of seq after_seq + 1 .. last_seq; the caller checked the bounds."""
        skip = after_seq + 1 - self.first_seq
        wires: list[str] = []
        for segment in self.segments:
            if skip >= SEGMENT:
                skip -= SEGMENT
                continue
            wires += segment.split("\n")[skip:]
            skip = 0
        wires += self.tail[skip:]
        return wires


class MemoryBus:
    def __init__(self, replay_window: int) -> None:
        self._window = replay_window
        self._handlers: list[Handler] = []
        self._rings: dict[StreamKey, _Ring] = {}

    def publish(self, message: BusMessage) -> None:
        self.publish_many([message])

    def publish_many(self, messages: list[BusMessage]) -> None:
        rings = self._rings
        for message in messages:
            if type(message) is Event:
                rings[message.key].append(message.seq, message.wire)
            elif isinstance(message, StreamReset):
                rings[message.key] = _Ring(message.ch, message.sym, message.epoch, self._window)
            elif isinstance(message, StreamRemoved):
                rings.pop(message.key, None)
        for handler in self._handlers:
            try:
                handler(messages)
            except Exception:
                # One broken consumer must not stop delivery to the others.
                log.exception("Bus handler %r failed on %d message(s)", handler, len(messages))

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
        if after_seq + 1 < ring.oldest():
            raise ReplayRefused("TOO_OLD")
        ch, sym, epoch = ring.ch, ring.sym, ring.epoch
        # A replayed event carries only what is sent and where it belongs (no ts, no fields).
        return [
            Event(ch, sym, epoch, seq, 0, _NOTHING, _NOTHING, wire)
            for seq, wire in enumerate(ring.after(after_seq), after_seq + 1)
        ]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()
