"""The hub: latest state per stream and who wants it. Hands events over without waiting.

It is the only consumer of the bus in a process. A stream's events of one turn of the event
loop go to its subscribers as one shared Chunk, which each subscriber's session absorbs into
its outbox at the end of the turn (or, while the runtime's pacer paces, when the pacer wakes
it); no socket is ever awaited here.

While the pacer paces, a chunk goes to the stream's subscribers by wake group (see
`GroupFeed`): one append per group that has subscribers of the stream, not one per
subscriber, and each subscriber takes a beat's chunks of the stream with one `extend` when
its group is woken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from service import protocol
from service.bus import Bus
from service.events import BAR_CHANNELS, BusMessage, Chunk, Event, StreamKey, StreamRemoved, StreamReset

log = logging.getLogger(__name__)


# Connections are spread over this many wake groups: the pacer wakes one group after the
# other over a beat, and while it paces the hub hands chunks over per group (GroupFeed).
WAKE_GROUPS = 10


class Subscriber(Protocol):
    inbox: list[Chunk]
    group: int  # its wake group, fixed for its lifetime (Hub.join_group, Hub.leave_group)

    def absorb(self) -> None: ...

    def on_removed(self, stream: Stream, reason: str) -> None: ...

    def on_reset(self, stream: Stream, reason: str) -> None: ...

    def fail(self, reason: str) -> None: ...


class GroupFeed:
    """One stream's subscribers in one wake group, and the chunks they have yet to take.

    While the hub defers, a sealed chunk is appended here once for the whole group; when the
    group is woken (or one of its members must catch up out of turn) the chunks go into
    every member's inbox with one `extend` each. At 1,000 clients this is a tenth of the
    appends of handing every chunk to every subscriber, which was a fifth of the server's
    CPU at scenario 3's load (docs/performance.md).
    """

    __slots__ = ("chunks", "extenders", "group", "members")

    def __init__(self, group: int) -> None:
        self.group = group
        self.chunks: list[Chunk] = []
        self.members: dict[Subscriber, None] = {}
        self.extenders: list[Callable[[list[Chunk]], None]] = []

    def release(self) -> None:
        chunks = self.chunks
        if chunks:
            for extend in self.extenders:
                extend(chunks)
            # Emptied, not replaced: a new list per beat would live a whole beat, and the
            # garbage collector promotes what lives that long (docs/performance.md, "The
            # garbage collector").
            chunks.clear()


class Stream:
    """What the hub knows of one (channel, symbol) stream."""

    __slots__ = ("appenders", "ch", "chunk", "day", "epoch", "feeds", "history", "key", "latest", "seq",
                 "subscribers", "sym")  # fmt: skip

    def __init__(self, reset: StreamReset, day: dict[str, dict[str, Any]]) -> None:
        self.key = reset.key
        self.day = day  # the hub's day statistics per symbol, shared by all its streams
        self.ch = reset.ch
        self.sym = reset.sym
        self.subscribers: dict[Subscriber, None] = {}  # a dict keeps delivery order stable
        # The subscribers' inbox.append, prebuilt: handing over a chunk is one call each.
        self.appenders: list[Callable[[Chunk], None]] = []
        # The same subscribers by wake group, for the deferred hand-over.
        self.feeds: dict[int, GroupFeed] = {}
        self.chunk: Chunk | None = None  # open: this turn's events, handed over when sealed
        self.history: deque[dict[str, Any]] | None = None  # final bars, for a bars stream
        self.restart(reset)

    def restart(self, reset: StreamReset) -> None:
        self.epoch = reset.epoch
        self.seq = 0
        self.latest: Event | None = None

    def snapshot_body(self, now_ms: int) -> dict[str, Any]:
        """The stream's latest event plus the symbol's current day statistics.

        Its seq is the last event of this stream folded in (G3).
        """
        latest = self.latest
        stats = self.day[self.sym]
        # The event's own fields win: a bar's open/high/low/volume are not the day's.
        data = {**stats, **latest.fields} if latest is not None else dict(stats)
        ts = latest.ts if latest is not None else now_ms
        return {"type": "snapshot", "ch": self.ch, "sym": self.sym, "epoch": self.epoch, "seq": self.seq,
                "ts": ts, "data": data}  # fmt: skip

    def snapshot(self, now_ms: int) -> str:
        return protocol.encode(self.snapshot_body(now_ms))

    def position(self) -> dict[str, Any]:
        return {"ch": self.ch, "sym": self.sym, "epoch": self.epoch, "seq": self.seq}


class Hub:
    def __init__(
        self,
        bus: Bus,
        clock: Callable[[], float] = time.time,
        bar_history: int = 1000,
        *,
        batched: bool = False,
        chunk_bytes: int = 16_384,
    ) -> None:
        self.bus = bus
        # batched: subscribers absorb once per event-loop iteration (the server); otherwise
        # after every event (plain synchronous use, as in the in-memory tests).
        self.batched = batched
        # Set while the runtime's pacer paces (service.pacer): subscribers then take their
        # chunks when the pacer wakes their group, not at every flush.
        self._deferred = False
        self._due: list[list[GroupFeed]] = [[] for _ in range(WAKE_GROUPS)]  # feeds holding chunks
        self._group_sizes = [0] * WAKE_GROUPS  # connections per wake group (join_group, leave_group)
        self._next_group = 0
        self.chunk_bytes = chunk_bytes  # the most a chunk handed to subscribers holds
        self._open: list[Stream] = []  # streams with an open chunk
        # Streams whose chunks were handed over since the last flush (some out of turn, by a
        # session answering a request): their subscribers absorb at the next flush.
        self._sealed: list[Stream] = []
        self._flush_scheduled = False
        self.clock = clock
        self.bar_history = bar_history
        # Final bars per bars stream, oldest first, for GET /api/v1/bars.
        self.bars: dict[StreamKey, deque[dict[str, Any]]] = {}
        self.streams: dict[StreamKey, Stream] = {}
        self.symbols: list[str] = []
        self.day: dict[str, dict[str, Any]] = {}
        self._unsubscribe = bus.subscribe(self.on_messages)

    @property
    def deferred(self) -> bool:
        return self._deferred

    @deferred.setter
    def deferred(self, on: bool) -> None:
        if on:
            self._deferred = True
            return
        try:
            self.seal()
            self.release_all()  # from here on chunks go straight to the inboxes
        finally:
            # Whatever failed, the hub must not stay deferring: nobody would wake the clients.
            self._deferred = False

    def join_group(self) -> int:
        """A wake group for a new connection: the smallest, so slices stay even as clients come and go.

        Ties go round robin from the last group given, so a burst of connections spreads out.
        (Plain round robin let groups drift apart under churn: the pacer's slices, and so
        the wait of a slice's last client, grew with the largest group.)
        """
        sizes = self._group_sizes
        start = self._next_group
        group = min(range(start, start + WAKE_GROUPS), key=lambda g: sizes[g % WAKE_GROUPS]) % WAKE_GROUPS
        sizes[group] += 1
        self._next_group = (group + 1) % WAKE_GROUPS
        return group

    def leave_group(self, group: int) -> None:
        """A connection of this wake group ended (once per join_group)."""
        self._group_sizes[group] -= 1

    @property
    def group_sizes(self) -> list[int]:
        return list(self._group_sizes)

    def release(self, group: int) -> None:
        """Hand the chunks held for one wake group over to its members' inboxes, in order."""
        due = self._due[group]
        if due:
            for feed in due:
                feed.release()
            due.clear()  # reused, as GroupFeed.chunks

    def release_all(self) -> None:
        for group in range(WAKE_GROUPS):
            self.release(group)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def on_messages(self, messages: list[BusMessage]) -> None:
        """Take a burst from the bus: events into open chunks, resets and removals in order."""
        streams = self.streams
        opened = False
        for message in messages:
            if not isinstance(message, Event):
                self._on_control(message)
                continue
            stream = streams.get(message.key)
            if stream is None or message.epoch != stream.epoch:
                log.warning("Dropped %r: its stream was never started (bus out of order?)", message)
                continue
            stream.seq = message.seq
            stream.latest = message
            # (The symbol's day statistics are the object its StreamReset brought: an event
            # carries that same dict, updated in place.)
            history = stream.history
            if history is not None and message.fields["final"]:
                history.append(message.fields)
            if stream.appenders:
                chunk = stream.chunk
                if chunk is not None:
                    chunk.events.append(message)
                    continue
                stream.chunk = Chunk(message)
                self._open.append(stream)
                opened = True
                if not self.batched:
                    self.flush()
        if opened and self.batched and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def _on_control(self, message: StreamReset | StreamRemoved) -> None:
        stream = self.streams.get(message.key)
        if isinstance(message, StreamRemoved):
            if stream is not None:
                self._remove(stream, message.reason)
            return
        self.day[message.sym] = message.stats
        if stream is None:
            self.streams[message.key] = Stream(message, self.day)
            if message.ch in BAR_CHANNELS:
                history = self.bars[message.key] = deque(maxlen=self.bar_history)
                self.streams[message.key].history = history
            if message.sym not in self.symbols:
                self.symbols.append(message.sym)
                self.symbols.sort()
            return
        self.seal()
        stream.restart(message)
        for subscriber in list(stream.subscribers):
            subscriber.on_reset(stream, message.reason)

    def _remove(self, stream: Stream, reason: str) -> None:
        self.seal()
        del self.streams[stream.key]
        self.bars.pop(stream.key, None)
        for subscriber in list(stream.subscribers):
            subscriber.on_removed(stream, reason)
        if not any(key[1] == stream.sym for key in self.streams):
            self.symbols.remove(stream.sym)
            self.day.pop(stream.sym, None)

    def bar_history_of(self, ch: str, sym: str, limit: int) -> list[dict[str, Any]]:
        """The last `limit` bars of a symbol, oldest first, the forming one included."""
        history = list(self.bars[(ch, sym)])
        latest = self.streams[(ch, sym)].latest
        if latest is not None and not latest.fields["final"]:
            history.append(latest.fields)
        return history[-limit:] if limit else []

    def seal(self) -> None:
        """Close the open chunks: a stream's next event starts a new one.

        Before a subscriber takes its chunks out of turn (it answers a request), and
        before the set of subscribers of a stream changes, so that a chunk holds exactly
        the events each of its holders should get.
        """
        for stream in self._open:
            chunk = stream.chunk
            if chunk is not None:
                stream.chunk = None
                chunk.seal()
                # A big chunk (a burst after a stall) goes out in pieces that fit a frame,
                # split here once for every subscriber rather than by each outbox.
                small = chunk.size <= self.chunk_bytes
                if self._deferred:
                    pieces = [chunk] if small else chunk.pieces(self.chunk_bytes)
                    due = self._due
                    for feed in stream.feeds.values():
                        if not feed.chunks:
                            due[feed.group].append(feed)
                        feed.chunks += pieces
                elif small:  # the common case: no list per chunk
                    for append in stream.appenders:
                        append(chunk)
                else:
                    pieces = chunk.pieces(self.chunk_bytes)
                    for append in stream.appenders:
                        for piece in pieces:
                            append(piece)
                self._sealed.append(stream)
        self._open.clear()

    def flush(self) -> None:
        """Seal this turn's chunks and let every subscriber that got some absorb them."""
        self._flush_scheduled = False
        self.seal()
        if self._deferred:
            self._sealed.clear()
            return
        touched, self._sealed = self._sealed, []
        subscribers: set[Subscriber] = set()
        for stream in touched:
            subscribers.update(stream.subscribers)
        for subscriber in subscribers:
            try:
                subscriber.absorb()
            except Exception:
                log.exception("Delivering to a client failed; closing that client")
                subscriber.fail("delivery failed")

    def attach(self, key: StreamKey, subscriber: Subscriber) -> None:
        self.seal()
        stream = self.streams[key]
        stream.subscribers[subscriber] = None
        stream.appenders = [s.inbox.append for s in stream.subscribers]
        feed = stream.feeds.get(subscriber.group)
        if feed is None:
            feed = stream.feeds[subscriber.group] = GroupFeed(subscriber.group)
        # What the group holds was sealed before this subscriber came: not for it.
        feed.release()
        feed.members[subscriber] = None
        feed.extenders = [s.inbox.extend for s in feed.members]

    def detach(self, key: StreamKey, subscriber: Subscriber) -> None:
        self.seal()
        stream = self.streams.get(key)
        if stream is not None and stream.subscribers.pop(subscriber, 0) is None:
            stream.appenders = [s.inbox.append for s in stream.subscribers]
            feed = stream.feeds[subscriber.group]
            feed.release()  # sealed while it was subscribed: everyone's, as without groups
            del feed.members[subscriber]
            feed.extenders = [s.inbox.extend for s in feed.members]
            if not feed.members:
                del stream.feeds[subscriber.group]

    def close(self) -> None:
        self._unsubscribe()
