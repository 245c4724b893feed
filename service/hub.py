"""The hub: latest state per stream and who wants it. Hands events over without waiting.

It is the only consumer of the bus in a process. Delivering an event is a loop of
synchronous `deliver()` calls into each subscriber's outbox; no socket is ever awaited here.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from service import protocol
from service.bus import Bus
from service.events import BAR_CHANNELS, BusMessage, Event, StreamKey, StreamReset

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def deliver(self, event: Event) -> None: ...

    def on_reset(self, stream: Stream, reason: str) -> None: ...

    def fail(self, reason: str) -> None: ...


class Stream:
    """What the hub knows of one (channel, symbol) stream."""

    __slots__ = ("ch", "day", "epoch", "key", "latest", "seq", "subscribers", "sym")

    def __init__(self, reset: StreamReset, day: dict[str, dict[str, Any]]) -> None:
        self.key = reset.key
        self.day = day  # the hub's day statistics per symbol, shared by all its streams
        self.ch = reset.ch
        self.sym = reset.sym
        self.subscribers: dict[Subscriber, None] = {}  # a dict keeps delivery order stable
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
        data = {**latest.fields, **stats} if latest is not None else dict(stats)
        ts = latest.ts if latest is not None else now_ms
        return {"type": "snapshot", "ch": self.ch, "sym": self.sym, "epoch": self.epoch, "seq": self.seq,
                "ts": ts, "data": data}  # fmt: skip

    def snapshot(self, now_ms: int) -> str:
        return protocol.encode(self.snapshot_body(now_ms))

    def position(self) -> dict[str, Any]:
        return {"ch": self.ch, "sym": self.sym, "epoch": self.epoch, "seq": self.seq}


class Hub:
    def __init__(self, bus: Bus, clock: Callable[[], float] = time.time, bar_history: int = 1000) -> None:
        self.bus = bus
        self.clock = clock
        self.bar_history = bar_history
        # Final bars per bars stream, oldest first, for GET /api/v1/bars.
        self.bars: dict[StreamKey, deque[dict[str, Any]]] = {}
        self.streams: dict[StreamKey, Stream] = {}
        self.symbols: list[str] = []
        self.day: dict[str, dict[str, Any]] = {}
        self._unsubscribe = bus.subscribe(self.on_message)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def on_message(self, message: BusMessage) -> None:
        stream = self.streams.get(message.key)
        if isinstance(message, Event):
            if stream is None or message.epoch != stream.epoch:
                log.warning("Dropped %r: its stream was never started (bus out of order?)", message)
                return
            stream.seq = message.seq
            stream.latest = message
            self.day[message.sym] = message.stats
            history = self.bars.get(message.key)
            if history is not None and message.fields["final"]:
                history.append(message.fields)
            for subscriber in stream.subscribers:
                try:
                    subscriber.deliver(message)
                except Exception:
                    log.exception("Delivering %r failed; closing that client", message)
                    subscriber.fail("delivery failed")
            return
        self.day[message.sym] = message.stats
        if stream is None:
            self.streams[message.key] = Stream(message, self.day)
            if message.ch in BAR_CHANNELS:
                self.bars[message.key] = deque(maxlen=self.bar_history)
            if message.sym not in self.symbols:
                self.symbols.append(message.sym)
                self.symbols.sort()
            return
        stream.restart(message)
        for subscriber in list(stream.subscribers):
            subscriber.on_reset(stream, message.reason)

    def bar_history_of(self, ch: str, sym: str, limit: int) -> list[dict[str, Any]]:
        """The last `limit` bars of a symbol, oldest first, the forming one included."""
        history = list(self.bars[(ch, sym)])
        latest = self.streams[(ch, sym)].latest
        if latest is not None and not latest.fields["final"]:
            history.append(latest.fields)
        return history[-limit:] if limit else []

    def attach(self, key: StreamKey, subscriber: Subscriber) -> None:
        self.streams[key].subscribers[subscriber] = None

    def detach(self, key: StreamKey, subscriber: Subscriber) -> None:
        stream = self.streams.get(key)
        if stream is not None:
            stream.subscribers.pop(subscriber, None)

    def close(self) -> None:
        self._unsubscribe()
