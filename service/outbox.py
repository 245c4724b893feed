"""One client's bounded queue of frames waiting for its socket, with the slow-consumer ladder.

Accounting is in bytes of JSON text. Below half of the limit every event is queued as is.
Past half, state-channel events are conflated: at most one pending event per stream, the
newest, carrying `prev_seq` (the seq the client saw before it) so the jump is legal. Event
channels are never conflated; when the limit itself is reached the outbox reports overflow
and the connection is closed with 4100, from which the client resumes without loss.

Replayed events are not counted: they are the very strings held by the bus's replay window,
so they cost this outbox only a reference each, bounded by window x subscriptions.
"""

from __future__ import annotations

import enum
from collections import deque

from service.events import Event, StreamKey
from service.protocol import data_frame, with_prev_seq

FRAME_OVERHEAD = len(data_frame(()))  # the `data` wrapper around the events


class Put(enum.Enum):
    OK = "ok"
    SLOW = "slow"  # just crossed half of the limit: conflation starts now
    OVERFLOW = "overflow"  # the limit is reached: the client must be closed


class _Entry:
    __slots__ = ("key", "payload", "prev", "size")

    def __init__(self, payload: str, key: StreamKey | None, size: int, prev: int = 0) -> None:
        self.payload = payload
        self.key = key  # None for control frames (ack, snapshot, error, ...)
        self.size = size  # bytes counted against the limit
        self.prev = prev  # for a conflated entry: the seq the client saw before it


class Outbox:
    def __init__(self, limit_bytes: int, batch_bytes: int) -> None:
        self.limit = limit_bytes
        self.batch_bytes = batch_bytes
        self.bytes = 0
        self.conflating = False
        self.conflated = 0  # events replaced by a newer one, for metrics and tests
        self._items: deque[_Entry] = deque()
        self._pending: dict[StreamKey, _Entry] = {}  # conflatable entry per state stream
        self._last_seq: dict[StreamKey, int] = {}  # newest seq queued per state stream while conflating

    def __len__(self) -> int:
        return len(self._items)

    def put_control(self, frame: str) -> Put:
        size = len(frame)
        if self.bytes + size > self.limit:
            return Put.OVERFLOW
        self._items.append(_Entry(frame, None, size))
        self.bytes += size
        return Put.OK

    def put_event(self, event: Event, state: bool, prev: int | None = None) -> Put:
        """Queue an event; `prev` is the seq the client saw before it, when not seq - 1."""
        if state and self.conflating:
            return self._put_conflated(event, prev)
        payload = event.wire if prev is None or prev == event.seq - 1 else with_prev_seq(event.wire, prev)
        size = len(payload)
        if self.bytes + size > self.limit:
            return Put.OVERFLOW
        self._items.append(_Entry(payload, event.key, size))
        self.bytes += size
        if not self.conflating and self.bytes > self.limit // 2:
            self.conflating = True
            return Put.SLOW
        return Put.OK

    def _put_conflated(self, event: Event, prev_hint: int | None) -> Put:
        key = event.key
        entry = self._pending.get(key)
        if entry is not None:
            # Replace in place: the stream keeps one pending event, and no tombstones pile up.
            payload = with_prev_seq(event.wire, entry.prev)
            if self.bytes + len(payload) - entry.size > self.limit:
                return Put.OVERFLOW
            self.bytes += len(payload) - entry.size
            entry.payload, entry.size = payload, len(payload)
            self._last_seq[key] = event.seq
            self.conflated += 1
            return Put.OK
        # Before conflation started every event was queued, so unless the caller knows
        # better (throttling), the client saw seq - 1.
        prev = self._last_seq.get(key, event.seq - 1 if prev_hint is None else prev_hint)
        payload = event.wire if prev == event.seq - 1 else with_prev_seq(event.wire, prev)
        if self.bytes + len(payload) > self.limit:
            return Put.OVERFLOW
        entry = self._pending[key] = _Entry(payload, key, len(payload), prev)
        self._last_seq[key] = event.seq
        self._items.append(entry)
        self.bytes += entry.size
        return Put.OK

    def put_replay(self, events: list[Event]) -> None:
        for event in events:
            self._items.append(_Entry(event.wire, event.key, 0))

    def forget(self, key: StreamKey) -> None:
        """Stop conflating into the stream's pending entry (unsubscribed or re-synced)."""
        self._pending.pop(key, None)
        self._last_seq.pop(key, None)

    def purge(self, key: StreamKey) -> None:
        """Drop every pending event of one stream (before it is replayed again)."""
        self.forget(key)
        kept = deque(e for e in self._items if e.key != key)
        self.bytes = sum(e.size for e in kept)
        self._items = kept

    def clear(self) -> None:
        self._items.clear()
        self._pending.clear()
        self._last_seq.clear()
        self.bytes = 0

    def take_frame(self) -> str | None:
        """The next frame to send: one control frame, or every leading event as one `data` frame."""
        items = self._items
        if not items:
            return None
        first = items[0]
        if first.key is None:
            items.popleft()
            self.bytes -= first.size
            return first.payload
        parts: list[str] = []
        size = FRAME_OVERHEAD - 1  # the first event needs no comma
        while items:
            entry = items[0]
            if entry.key is None or (parts and size + 1 + len(entry.payload) > self.batch_bytes):
                break
            items.popleft()
            parts.append(entry.payload)
            size += 1 + len(entry.payload)
            self.bytes -= entry.size
            if self._pending.get(entry.key) is entry:
                del self._pending[entry.key]
        if self.conflating and self.bytes <= self.limit // 4:
            # Caught up: back to plain queueing. Every stream's newest event is queued or
            # sent, so the next one follows it by exactly +1 again.
            self.conflating = False
            self._pending.clear()
            self._last_seq.clear()
        return data_frame(parts)
