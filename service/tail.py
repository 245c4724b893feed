"""`stockpush tail`: the client's events, one per line, as text for people or JSON for pipes."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TextIO

import orjson

from service.client import (
    BarEvent,
    ClientError,
    QuoteEvent,
    ResetMessage,
    SnapshotMessage,
    StatusEvent,
    StreamEvent,
    TradeEvent,
    connect,
)

# The `type` each line carries: data events have none on the wire (their `ch` says it).
EVENT_TYPES: dict[type, str] = {
    TradeEvent: "trade",
    QuoteEvent: "quote",
    StatusEvent: "status",
    BarEvent: "bar",
    SnapshotMessage: "snapshot",
    ResetMessage: "reset",
}


def as_json(event: StreamEvent) -> str:
    """One event as a JSON object with a `type`, fields as they came from the server."""
    return orjson.dumps({"type": EVENT_TYPES[type(event)], **event.model_dump(exclude_unset=True)}).decode()


def as_text(event: StreamEvent) -> str:
    """One event as a short line: time, symbol, what happened."""
    ts = getattr(event, "ts", None)
    clock = datetime.datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S.%f")[:-3] if ts else " " * 12
    head = f"{clock}  {event.sym:<6} {event.ch:<8}"
    if isinstance(event, TradeEvent):
        return f"{head} {event.price} x {event.size}  #{event.seq}"
    if isinstance(event, QuoteEvent):
        return f"{head} {event.bid} x {event.bid_size} / {event.ask} x {event.ask_size}  #{event.seq}"
    if isinstance(event, StatusEvent):
        return f"{head} {event.status} {event.reason}  #{event.seq}".rstrip()
    if isinstance(event, BarEvent):
        state = "final" if event.final else "forming"
        return (
            f"{head} O {event.open} H {event.high} L {event.low} C {event.close} V {event.volume} {state}  #{event.seq}"
        )
    if isinstance(event, SnapshotMessage):
        return f"{head} snapshot  epoch {event.epoch} #{event.seq}"
    return f"{head} reset ({event.reason})  new epoch {event.epoch}"


async def run_tail(
    url: str,
    symbols: Sequence[str],
    *,
    channels: Sequence[str],
    json_lines: bool,
    count: int | None,
    throttle_ms: int,
    out: TextIO,
    err: TextIO,
) -> int:
    """Print events until `count` of them (or forever); 1 with a one-line message on failure."""
    line = as_json if json_lines else as_text
    try:
        async with connect(url) as stream:
            await stream.subscribe(symbols or ["*"], channels=channels, throttle_ms=throttle_ms)
            printed = 0
            async for event in stream:
                out.write(line(event) + "\n")
                out.flush()
                printed += 1
                if count is not None and printed >= count:
                    break
    except (ClientError, ValueError) as exc:
        err.write(f"stockpush tail: {exc}\n")
        return 1
    return 0
