"""What travels on the bus: sequenced events and stream resets, already encoded for the wire."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

StreamKey = tuple[str, str]  # (channel, symbol)

TRADES = "trades"
QUOTES = "quotes"
STATUS = "status"
BAR_CHANNELS = {"bars.1s": 1_000, "bars.1m": 60_000}  # channel -> interval in ms
# event channels: every event matters, never conflated; state channels: the latest wins.
CHANNEL_KINDS: dict[str, str] = {
    TRADES: "event",
    QUOTES: "state",
    STATUS: "state",
    **dict.fromkeys(BAR_CHANNELS, "state"),
}
# What `subscribe` without `channels` means.
DEFAULT_CHANNELS = (TRADES, QUOTES)
STATE_CHANNELS = frozenset(ch for ch, kind in CHANNEL_KINDS.items() if kind == "state")


# An event's `fields` not kept as a dict of their own (trades: one dict less per event on
# the hottest path); `Event.fields` decodes them from the wire when asked, which only
# snapshots and tests do. Shared by every such event: never mutate it, and read fields
# through the property, not by position (`e[6]`, `_asdict()`).
FROM_WIRE: dict[str, Any] = {}
_ENVELOPE = ("ch", "sym", "seq", "ts", "prev_seq")


class _EventFields(NamedTuple):
    ch: str
    sym: str
    key: StreamKey
    epoch: str
    seq: int
    ts: int
    fields: dict[str, Any]
    stats: dict[str, Any]
    wire: str
    size: int


class Event(_EventFields):
    """One sequenced event of one stream.

    `wire` is the event's JSON object, encoded once by the sequencer and shared by every
    connection that sends it; `size` is its length, what it costs an outbox. `stats` is
    the symbol's day statistics, so a snapshot can be built next to the latest event.

    An immutable tuple: cheap to create on the hottest path, and what is sent is what was
    sequenced.
    """

    __slots__ = ()

    def __new__(
        cls, ch: str, sym: str, epoch: str, seq: int, ts: int, fields: dict[str, Any], stats: dict[str, Any], wire: str
    ) -> Event:
        return tuple.__new__(cls, (ch, sym, (ch, sym), epoch, seq, ts, fields, stats, wire, len(wire)))

    @property
    def fields(self) -> dict[str, Any]:
        """The event's own fields (price, size; bid, ask...), without the envelope."""
        kept: dict[str, Any] = self[6]
        if kept is not FROM_WIRE:
            return kept
        decoded: dict[str, Any] = orjson.loads(self.wire)
        for key in _ENVELOPE:
            decoded.pop(key, None)
        return decoded

    def __repr__(self) -> str:
        return f"Event({self.ch}/{self.sym} {self.epoch}#{self.seq})"


class StreamReset:
    """A stream's sequence restarts: a new epoch from seq 0 (e.g. its feed was restarted)."""

    __slots__ = ("ch", "epoch", "key", "reason", "stats", "sym")

    def __init__(self, ch: str, sym: str, epoch: str, reason: str, stats: dict[str, Any]) -> None:
        self.ch = ch
        self.sym = sym
        self.key: StreamKey = (ch, sym)
        self.epoch = epoch
        self.reason = reason
        self.stats = stats

    def __repr__(self) -> str:
        return f"StreamReset({self.ch}/{self.sym} {self.epoch} {self.reason})"


class StreamRemoved:
    """A stream is gone: its symbol was removed from the configuration."""

    __slots__ = ("ch", "key", "reason", "sym")

    def __init__(self, ch: str, sym: str, reason: str) -> None:
        self.ch = ch
        self.sym = sym
        self.key: StreamKey = (ch, sym)
        self.reason = reason

    def __repr__(self) -> str:
        return f"StreamRemoved({self.ch}/{self.sym} {self.reason})"


BusMessage = Event | StreamReset | StreamRemoved


class Chunk:
    """Consecutive events of one stream handed to its subscribers together, encoded once.

    The hub opens a chunk at a stream's first event in a turn of the event loop and
    appends the turn's further events to it; sealing it renders `wire`, the events' JSON
    joined by commas, and hands it to every subscriber, shared by every connection. Per
    event, fan-out then costs one list append, not one per subscriber.
    """

    __slots__ = ("events", "key", "size", "wire")

    def __init__(self, first: Event) -> None:
        self.key = first.key
        self.events = [first]
        self.wire = ""
        self.size = 0

    def seal(self) -> None:
        events = self.events
        self.wire = events[0].wire if len(events) == 1 else ",".join([e.wire for e in events])
        self.size = len(self.wire)

    def pieces(self, limit: int) -> list[Chunk]:
        """The sealed events as consecutive sealed chunks of about `limit` bytes each."""
        out: list[Chunk] = []
        piece: Chunk | None = None
        for event in self.events:
            if piece is None or piece.size + 1 + event.size > limit:
                if piece is not None:
                    piece.seal()
                    out.append(piece)
                piece = Chunk(event)
                piece.size = event.size
            else:
                piece.events.append(event)
                piece.size += 1 + event.size
        assert piece is not None
        piece.seal()
        out.append(piece)
        return out

    def __repr__(self) -> str:
        return f"Chunk({self.key[0]}/{self.key[1]} x{len(self.events)})"
