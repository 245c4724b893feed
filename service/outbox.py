"""One client's bounded queue of frames waiting for its socket, with the slow-consumer ladder.

Accounting is in bytes of JSON text. Below half of the limit every event is queued as is.
Past half, state-channel events are conflated: at most one pending event per stream, the
newest, carrying `prev_seq` (the seq the client saw before it) so the jump is legal. Event
channels are never conflated; when the limit itself is reached the outbox reports overflow
and the connection is closed with 4100, from which the client resumes without loss.

A client that falls behind keeps what it has not read alive here, up to the limit: tens of
thousands of events. Queued as the shared Event objects, each would stay tracked by the
garbage collector (a tuple subclass is never untracked), and every full collection, more
frequent as they pile up, would walk them all while every client waits: in scenario 5 of
the benchmark a stalled client's 4 MiB took full collections from 5 to 50 ms and the
healthy clients' p99 up by a third. So past `behind` bytes events are queued as plain
(wire, key, size) tuples, which the collector stops tracking at their first collections; a
whole chunk goes in as one such tuple when none of its events can be conflated.

Replayed events are not counted here: a resume after a 4100 close must be able to bring
back more than the outbox held (the socket buffers held more still). The session bounds
them instead, by `max_replay_bytes` per resume request (REPLAY_TOO_LARGE beyond it).
"""

from __future__ import annotations

import enum
import operator
from typing import Any

from service.events import Chunk, Event, StreamKey
from service.protocol import data_frame, with_prev_seq

FRAME_OVERHEAD = len(data_frame(()))
WIRE = operator.attrgetter("wire")  # an Event's or a Chunk's JSON text


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


# A queued event of a client that is behind, or a whole chunk of them: (wire, key, size),
# see the module's docstring.
Plain = tuple[str, StreamKey, int]


def _key(item: Event | Chunk | _Entry | Plain) -> StreamKey | None:
    return item[1] if type(item) is tuple else item.key  # type: ignore[union-attr,return-value]


def _size(item: Event | Chunk | _Entry | Plain | str) -> int:
    if type(item) is str:
        return len(item)
    return item[2] if type(item) is tuple else item.size  # type: ignore[union-attr,return-value]


class Outbox:
    __slots__ = ("_items", "_last_seq", "_pending", "_special", "batch_bytes", "behind", "bytes", "conflated",
                 "conflating", "half", "limit", "replay_bytes")  # fmt: skip

    def __init__(self, limit_bytes: int, batch_bytes: int) -> None:
        self.limit = limit_bytes
        self.batch_bytes = batch_bytes
        self.bytes = 0
        self.conflating = False
        self.conflated = 0  # events replaced by a newer one, for metrics and tests
        self.half = limit_bytes // 2
        # Past this many bytes queued the client is behind: events are queued as Plain
        # tuples, not shared objects (see the module's docstring).
        self.behind = min(self.half, 4 * batch_bytes)
        # Plain events are queued as the shared Event or Chunk itself (no allocation per
        # client); control frames as str; anything client-specific (prev_seq, replay) as an
        # _Entry.
        # A list, not a deque: it is empty most of the time, and an empty list holds no
        # storage where a deque keeps a 0.6 KB block, per connection. Frames take items
        # from the front in runs, so the front is cut once per frame.
        self._items: list[Event | Chunk | _Entry | Plain | str] = []
        self._special = 0  # queued items that are not shared events (control frames, _Entry, Plain)
        self.replay_bytes = 0  # replayed events queued, not counted in `bytes`
        self._pending: dict[StreamKey, _Entry] = {}  # conflatable entry per state stream
        self._last_seq: dict[StreamKey, int] = {}  # newest seq queued per state stream while conflating

    def __len__(self) -> int:
        return len(self._items)

    def put_control(self, frame: str) -> Put:
        size = len(frame)
        if self.bytes + size > self.limit:
            return Put.OVERFLOW
        self._items.append(frame)
        self._special += 1
        self.bytes += size
        return Put.OK

    def put_event(self, event: Event, state: bool, prev: int | None = None) -> Put:
        """Queue an event; `prev` is the seq the client saw before it, when not seq - 1."""
        if state and self.conflating:
            return self._put_conflated(event, prev)
        if prev is None or prev == event.seq - 1:
            if self.bytes >= self.behind:
                return self._put_plain(event.wire, event.key, event.size)
            size = event.size
            if self.bytes + size > self.limit:
                return Put.OVERFLOW
            self._items.append(event)
        else:
            payload = with_prev_seq(event.wire, prev)
            size = len(payload)
            if self.bytes + size > self.limit:
                return Put.OVERFLOW
            self._items.append(_Entry(payload, event.key, size))
            self._special += 1
        return self._counted(size)

    def _put_plain(self, wire: str, key: StreamKey, size: int) -> Put:
        if self.bytes + size > self.limit:
            return Put.OVERFLOW
        self._items.append((wire, key, size))
        self._special += 1
        return self._counted(size)

    def _counted(self, size: int) -> Put:
        """Count `size` queued bytes; SLOW when that crosses half of the limit (conflation starts)."""
        self.bytes += size
        if not self.conflating and self.bytes > self.half:
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
        self._special += 1
        self._last_seq[key] = event.seq
        self._items.append(entry)
        self.bytes += entry.size
        return Put.OK

    def put_chunk(self, chunk: Chunk) -> Put:
        """Queue a whole sealed chunk as one Plain item: a client that is behind, in one step.

        Its events are not looked at one by one, and the chunk and its events are not kept
        alive (see the module's docstring); the caller makes sure none of them may be
        conflated. OVERFLOW queues nothing: the caller goes event by event to the limit.
        """
        return self._put_plain(chunk.wire, chunk.key, chunk.size)

    def extend(self, events: list[Chunk], size: int) -> None:
        """Queue sealed chunks whose sizes add up to `size`; the caller checked the bounds."""
        self._items.extend(events)
        self.bytes += size

    def put_replay(self, events: list[Event]) -> None:
        """Queue replayed events, uncounted: the session bounds them by max_replay_bytes."""
        for event in events:
            self._items.append(_Entry(event.wire, event.key, 0))
            self.replay_bytes += event.size
        self._special += len(events)

    def forget(self, key: StreamKey) -> None:
        """Stop conflating into the stream's pending entry (unsubscribed or re-synced)."""
        self._pending.pop(key, None)
        self._last_seq.pop(key, None)

    def purge(self, key: StreamKey) -> None:
        """Drop every pending event of one stream (before it is replayed again)."""
        self.forget(key)
        kept = [e for e in self._items if type(e) is str or _key(e) != key]  # type: ignore[arg-type]
        self.bytes = sum(map(_size, kept))
        self._special = sum(1 for e in kept if type(e) is not Event and type(e) is not Chunk)
        self.replay_bytes = sum(len(e.payload) for e in kept if type(e) is _Entry and e.size == 0)
        self._items = kept

    def clear(self) -> None:
        self._items.clear()
        self._pending.clear()
        self._last_seq.clear()
        self.bytes = 0
        self._special = 0
        self.replay_bytes = 0

    def take_frame(self) -> str | None:
        """The next frame to send: one control frame, or every leading event as one `data` frame."""
        items = self._items
        if not items:
            return None
        if self._special == 0 and self.bytes + FRAME_OVERHEAD + len(items) <= self.batch_bytes:
            # Only plain events queued and they fit: one join at C speed.
            frame = '{"type":"data","events":[' + ",".join(map(WIRE, items)) + "]}"
            items.clear()
            self.bytes = 0
            self._end_conflation_if_caught_up()
            return frame
        first = items[0]
        if type(first) is str:
            self._special -= 1
            del items[0]
            self.bytes -= len(first)
            return first
        parts: list[str] = []
        size = FRAME_OVERHEAD - 1  # the first event needs no comma
        taken = 0
        index = 0
        pending = self._pending
        queued: list[Any] = items  # checked by exact type below, faster than isinstance
        for item in queued:
            kind = type(item)
            if kind is Event or kind is Chunk:
                payload, cost = item.wire, item.size
            elif kind is tuple:
                payload, _, cost = item
            elif kind is _Entry:
                payload, cost = item.payload, item.size
            else:
                break  # a control frame: it goes out on its own, after this batch
            if size + 1 + len(payload) > self.batch_bytes:
                if parts:
                    break  # it goes first in the next frame
                if kind is Chunk and len(item.events) > 1:
                    # Bigger than a whole frame (the hub cuts chunks smaller, so rarely):
                    # the head fills this frame, the rest stays first in line.
                    head, rest = _split(item, self.batch_bytes - size - 1)
                    if head is not None:
                        queued[index] = rest
                        parts.append(head.wire)
                        taken += item.size - rest.size
                        break
            index += 1
            if kind is _Entry:
                self._special -= 1
                if item.size == 0:
                    self.replay_bytes -= len(payload)
                key: StreamKey = item.key
                if pending and pending.get(key) is item:
                    del pending[key]
            elif kind is tuple:
                self._special -= 1
            parts.append(payload)
            size += 1 + len(payload)
            taken += cost
        del items[:index]
        self.bytes -= taken
        self._end_conflation_if_caught_up()
        return data_frame(parts)

    def _end_conflation_if_caught_up(self) -> None:
        if self.conflating and self.bytes <= self.limit // 4:
            # Caught up: back to plain queueing. Every stream's newest event is queued or
            # sent, so the next one follows it by exactly +1 again.
            self.conflating = False
            self._pending.clear()
            self._last_seq.clear()


def _split(chunk: Chunk, room: int) -> tuple[Chunk | None, Chunk]:
    """The chunk's leading events that fit in `room` bytes (None if not even one), and the rest.

    New chunks: the original is shared with other connections and stays as it is.
    """
    size = -1
    count = 0
    for event in chunk.events:
        if size + 1 + event.size > room:
            break
        size += 1 + event.size
        count += 1
    if count == 0:
        return None, chunk
    head, rest = Chunk(chunk.events[0]), Chunk(chunk.events[count])
    head.events, rest.events = chunk.events[:count], chunk.events[count:]
    head.seal()
    rest.seal()
    return head, rest
