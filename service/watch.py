"""`stockpush watch`: a live table of symbols in the terminal, drawn with ANSI codes only.

`Board` folds the client's events into one row per symbol; `render` turns it into lines
(pure); `Screen` writes them: redrawn in place on a terminal, appended as plain text when
the output is not one. Colour only on a terminal, and never with NO_COLOR set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TextIO

from service.client import (
    BarEvent,
    ClientError,
    QuoteEvent,
    ResetMessage,
    SnapshotMessage,
    StatusEvent,
    Stream,
    StreamEvent,
    TradeEvent,
    connect,
)

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
GREEN = "\x1b[32m"
RED = "\x1b[31m"
YELLOW = "\x1b[33m"

Segment = tuple[str, str]  # (text, ANSI style or "")


@dataclasses.dataclass(slots=True)
class Row:
    sym: str
    decimals: int = 2
    last: float | None = None
    prev_close: float | None = None
    bid: float | None = None
    bid_size: int | None = None
    ask: float | None = None
    ask_size: int | None = None
    volume: int | None = None
    direction: int = 0  # the last trade's tick: +1 up, -1 down, 0 unchanged or unknown
    status: str | None = None


class Board:
    """One row per symbol, updated from trades, quotes, status and their snapshots."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.rows = {sym: Row(sym) for sym in symbols}
        self.version = 0  # bumped on every change

    def apply(self, event: StreamEvent) -> None:
        row = self.rows.get(event.sym)
        if row is None:
            return
        self.version += 1
        if isinstance(event, SnapshotMessage):
            day = event.data
            row.decimals = day.price_decimals
            row.prev_close = day.prev_close
            row.status = day.status
            if event.ch == "trades":
                row.last, row.volume, row.direction = day.last, day.volume, 0
            latest = event.latest_event()
            if isinstance(latest, QuoteEvent):
                self._quote(row, latest)
        elif isinstance(event, TradeEvent):
            if row.last is not None:
                row.direction = (event.price > row.last) - (event.price < row.last) or row.direction
            row.last = event.price
            row.volume = (row.volume or 0) + event.size
        elif isinstance(event, QuoteEvent):
            self._quote(row, event)
        elif isinstance(event, StatusEvent):
            row.status, row.prev_close = event.status, event.prev_close
            if event.reason == "NEW_DAY":
                row.volume, row.direction = 0, 0
        elif isinstance(event, ResetMessage | BarEvent):
            pass  # a reset is followed by a snapshot; bars are not shown

    @staticmethod
    def _quote(row: Row, quote: QuoteEvent) -> None:
        row.bid, row.bid_size, row.ask, row.ask_size = quote.bid, quote.bid_size, quote.ask, quote.ask_size


COLUMNS = (("SYMBOL", -8), ("", 1), ("LAST", 12), ("CHG", 10), ("CHG%", 9), ("BID", 12), ("ASK", 12), ("VOLUME", 14))


def render(
    board: Board, footer: list[Segment], *, color: bool, arrows: str = "▲▼", width: int | None = None
) -> list[str]:
    """The table as lines of text, with ANSI styles when `color`, cut to `width` columns."""
    header: list[Segment] = [(_cell(title, w), BOLD) for title, w in COLUMNS]
    lines = [_line(header, color, width)]
    for row in board.rows.values():
        lines.append(_line(_row(row, arrows), color, width))
    lines.append(_line(footer, color, width))
    return lines


def _row(row: Row, arrows: str) -> list[Segment]:
    d = row.decimals
    change = row.last - row.prev_close if row.last is not None and row.prev_close is not None else None
    trend = "" if change is None or change == 0 else GREEN if change > 0 else RED
    tick = GREEN if row.direction > 0 else RED if row.direction < 0 else ""
    mark = arrows[0] if row.direction > 0 else arrows[1] if row.direction < 0 else " "
    cells: list[Segment] = [
        (_cell(row.sym, -8), BOLD),
        (_cell(mark, 1), tick),
        (_cell(_num(row.last, d), 12), tick),
        (_cell("" if change is None else f"{change:+,.{d}f}", 10), trend),
        (_cell("" if change is None or not row.prev_close else f"{change / row.prev_close:+.2%}", 9), trend),
        (_cell(_num(row.bid, d), 12), ""),
        (_cell(_num(row.ask, d), 12), ""),
        (_cell("" if row.volume is None else f"{row.volume:,}", 14), ""),
    ]
    if row.status not in (None, "open"):
        cells.append((f"  {row.status}", YELLOW))
    return cells


def _num(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:,.{decimals}f}"


def _cell(text: str, width: int) -> str:
    return text.ljust(-width) if width < 0 else " " + text.rjust(width)


def _line(segments: list[Segment], color: bool, width: int | None) -> str:
    out: list[str] = []
    room = width if width is not None else 1 << 30
    for text, style in segments:
        text = text[:room]
        room -= len(text)
        out.append(f"{style}{text}{RESET}" if color and style and text else text)
    return "".join(out).rstrip() if not color else "".join(out)


class Screen:
    """Draws frames of lines: in place on a terminal, appended otherwise."""

    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0  # lines on screen from the last frame

    def open(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25l")  # hide the cursor while drawing

    def draw(self, lines: list[str]) -> None:
        if self.tty:
            up = f"\r\x1b[{self._drawn}A" if self._drawn else ""
            self.out.write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
            self._drawn = len(lines)
        else:
            self.out.write("\n".join(lines) + "\n\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25h")  # the cursor back, below the last frame
            self.out.flush()


def wants_color(out: TextIO) -> bool:
    """Colour only on a terminal that can show it, and not when NO_COLOR is set (no-color.org)."""
    return out.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def arrows_for(out: TextIO) -> str:
    try:
        "▲▼".encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "^v"
    return "▲▼"


def _footer(stream: Stream, url: str) -> list[Segment]:
    stats = stream.stats
    state: Segment = ("live", GREEN) if stream.connected else ("reconnecting...", YELLOW)
    latency = "" if stats.latency_avg_ms is None else f"  latency {stats.latency_avg_ms:.0f} ms"
    extra = f"{latency}  reconnects {stats.reconnects}  resets {stats.resets}  {time.strftime('%H:%M:%S')}"
    return [(f"{url}  ", DIM), state, (extra + "  Ctrl-C quits", DIM)]


async def run_watch(
    url: str,
    symbols: Sequence[str],
    *,
    out: TextIO,
    err: TextIO,
    refresh_s: float,
    tty: bool | None = None,
    color: bool | None = None,
    width: Callable[[], int | None] | None = None,
) -> int:
    """Show the table until interrupted; 1 with a one-line message when the stream cannot go on."""
    tty = out.isatty() if tty is None else tty
    color = wants_color(out) if color is None else color
    if width is None:
        width = (lambda: shutil.get_terminal_size().columns - 1) if tty else (lambda: None)
    try:
        async with connect(url) as stream:
            assert stream.hello is not None
            wanted = [s.upper() for s in symbols] or list(stream.hello.symbols)
            board = Board(wanted)
            await stream.subscribe(wanted, channels=["trades", "status"])
            # Quotes at most once per refresh: the table cannot show more.
            await stream.subscribe(wanted, channels=["quotes"], throttle_ms=max(1, int(refresh_s * 1000)))
            screen = Screen(out, tty=tty)
            screen.open()
            consumer = asyncio.create_task(_consume(stream, board))
            try:
                shown = -1 if tty else 0  # on a terminal the empty table at once; elsewhere data first
                while True:
                    if tty or board.version != shown:
                        shown = board.version
                        lines = render(board, _footer(stream, url), color=color, arrows=arrows_for(out), width=width())
                        screen.draw(lines)
                    done, _ = await asyncio.wait({consumer}, timeout=refresh_s)
                    if done:
                        consumer.result()
                        return 0
            finally:
                consumer.cancel()
                screen.close()
    except ClientError as exc:
        err.write(f"stockpush watch: {exc}\n")
        return 1


async def _consume(stream: Stream, board: Board) -> None:
    async for event in stream:
        board.apply(event)


def run_live(main: Coroutine[Any, Any, int], *, interrupted: int) -> int:
    """Run a live command (watch, tail) to its exit code; Ctrl-C gives `interrupted`.

    A reader that went away (`stockpush tail | head`) ends it quietly with 0.
    """
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        return interrupted
    except BrokenPipeError:
        # Keep Python from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
