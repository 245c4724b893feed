"""Readers for recorded market data: each turns a CSV (or CSV.gz) file into bars or prints.

Formats (headers are matched by name, case-insensitively, in any order; other columns are
ignored):

- `yahoo_daily`  Date,Open,High,Low,Close,Adj Close,Volume  (Close is shown, not Adj Close)
- `stooq_daily`  Date,Open,High,Low,Close,Volume
- `polygon_minute_aggs`, `polygon_day_aggs`
                 ticker,volume,open,close,high,low,window_start[,transactions]
                 (window_start in Unix nanoseconds; note open,close,high,low order)
- `generic_trades`  ts,symbol,price,size[,bid,ask,bid_size,ask_size]  (our recording format)
                 ts is ISO-8601 with an offset, or an integer epoch in s, ms, us or ns.
                 A row with empty price and size is a quote only.

A row that cannot be used raises `BadRowError`; the caller decides whether to skip it.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Literal, TypeAlias

ReplayFormat: TypeAlias = Literal[
    "yahoo_daily", "stooq_daily", "polygon_minute_aggs", "polygon_day_aggs", "generic_trades"
]
# Formats without a symbol column: the file is one symbol.
ONE_SYMBOL_FORMATS = ("yahoo_daily", "stooq_daily")
_BAR_COLUMNS = ("open", "high", "low", "close", "volume")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "yahoo_daily": ("date", *_BAR_COLUMNS, "adj close"),
    "stooq_daily": ("date", *_BAR_COLUMNS),
    "polygon_minute_aggs": ("ticker", "window_start", *_BAR_COLUMNS),
    "polygon_day_aggs": ("ticker", "window_start", *_BAR_COLUMNS),
    "generic_trades": ("ts", "symbol", "price", "size"),
}
QUOTE_COLUMNS = ("bid", "ask", "bid_size", "ask_size")
_MINUTE_MS = 60_000
_GZIP_MAGIC = b"\x1f\x8b"


class BadRowError(ValueError):
    """One row of a file cannot be used; `str()` names the file and line."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    start_ms: int
    end_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    line: int


@dataclass(frozen=True, slots=True)
class Print:
    """A trade, a quote, or both (the quote prevailing at the trade)."""

    symbol: str
    ts_ms: int
    price: float | None
    size: int | None
    bid: float | None
    ask: float | None
    bid_size: int | None
    ask_size: int | None
    line: int


Record = Bar | Print
# Local trading day to the (start, end) of its regular session in Unix ms, for daily bars.
DayWindow = Callable[[date], tuple[int, int]]


def open_text(path: str | Path) -> IO[str]:
    """The file as text; gzip is recognised by its magic bytes, whatever the name."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _columns(header: list[str]) -> dict[str, int]:
    return {name.strip().lower(): i for i, name in enumerate(header)}


def header_problem(path: str | Path, fmt: str) -> str | None:
    """Why the file cannot be read as `fmt` (missing columns, unreadable), or None."""
    try:
        with open_text(path) as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        return f"cannot read {path}: {exc}"
    columns = _columns(header)
    missing = [c for c in REQUIRED_COLUMNS[fmt] if c not in columns]
    if not missing:
        return None
    fits = [f for f, required in REQUIRED_COLUMNS.items() if all(c in columns for c in required)]
    hint = f"; the header fits format {fits[0]!r}" if fits else ""
    return f"{path}: the header lacks column(s) {', '.join(missing)} required by format {fmt!r}{hint}"


def read_records(
    path: str | Path,
    fmt: ReplayFormat,
    *,
    daily_symbol: str = "",
    day_window: DayWindow | None = None,
) -> Iterator[Record | BadRowError]:
    """Every row as a record, or as the `BadRowError` explaining why it is unusable."""
    name = str(path)
    with open_text(path) as handle:
        reader = csv.reader(handle)
        columns = _columns(next(reader, []))
        row_parser = _PARSERS[fmt]
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue  # blank lines are not data
            try:
                yield row_parser(_Row(row, columns, name, reader.line_num), daily_symbol, day_window)
            except BadRowError as bad:
                yield bad


class _Row:
    __slots__ = ("cells", "columns", "line", "path")

    def __init__(self, cells: list[str], columns: dict[str, int], path: str, line: int) -> None:
        self.cells, self.columns, self.path, self.line = cells, columns, path, line

    def bad(self, problem: str) -> BadRowError:
        return BadRowError(self.path, self.line, problem)

    def text(self, column: str) -> str:
        index = self.columns.get(column)
        if index is None or index >= len(self.cells):
            return ""
        return self.cells[index].strip()

    def required(self, column: str) -> str:
        value = self.text(column)
        if not value:
            raise self.bad(f"{column} is empty")
        return value

    def price(self, column: str, *, optional: bool = False) -> float | None:
        text = self.text(column) if optional else self.required(column)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise self.bad(f"{column} is not a number: {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise self.bad(f"{column} must be a positive price, got {text!r}")
        return value

    def size(self, column: str, *, optional: bool = False) -> int | None:
        text = self.text(column) if optional else self.required(column)
        if not text:
            return None
        try:
            value = float(text)  # 2026 Polygon files carry fractional volume
        except ValueError:
            raise self.bad(f"{column} is not a number: {text!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise self.bad(f"{column} must be zero or more, got {text!r}")
        return round(value)


def _bar(row: _Row, symbol: str, start_ms: int, end_ms: int) -> Bar:
    open_, high, low, close = (_number(row.price(c)) for c in ("open", "high", "low", "close"))
    volume = round(_number(row.size("volume")))
    if not low <= min(open_, close) <= max(open_, close) <= high:
        raise row.bad(f"needs low <= open, close <= high, got open {open_} high {high} low {low} close {close}")
    return Bar(symbol, start_ms, end_ms, open_, high, low, close, volume, row.line)


def _number(value: float | None) -> float:
    # `required` columns never come back as None; this narrows the type for mypy.
    assert value is not None
    return value


def _daily(row: _Row, symbol: str, day_window: DayWindow | None) -> Record:
    text = row.required("date")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise row.bad(f"date is not YYYY-MM-DD: {text!r}") from None
    assert day_window is not None
    start, end = day_window(day)
    return _bar(row, symbol, start, end)


def _polygon_minute(row: _Row, _symbol: str, _window: DayWindow | None) -> Record:
    start = _epoch_ms(row, row.required("window_start"))
    return _bar(row, row.required("ticker"), start, start + _MINUTE_MS)


def _polygon_day(row: _Row, _symbol: str, day_window: DayWindow | None) -> Record:
    # window_start is the day's midnight in New York, in ns; the bar covers the session.
    assert day_window is not None
    start_ms = _epoch_ms(row, row.required("window_start"))
    day = datetime.fromtimestamp(start_ms / 1000 + 12 * 3600, UTC).date()  # + 12 h: safely inside the day
    start, end = day_window(day)
    return _bar(row, row.required("ticker"), start, end)


def _generic(row: _Row, _symbol: str, _window: DayWindow | None) -> Record:
    ts = _timestamp_ms(row, row.required("ts"))
    price = row.price("price", optional=True)
    size = row.size("size", optional=True)
    if (price is None) != (size is None):
        raise row.bad("price and size go together: give both (a trade) or neither (a quote)")
    if size == 0:
        raise row.bad("a trade needs a size above zero")
    bid, ask = row.price("bid", optional=True), row.price("ask", optional=True)
    bid_size, ask_size = row.size("bid_size", optional=True), row.size("ask_size", optional=True)
    if (bid is None) != (ask is None):
        raise row.bad("bid and ask go together")
    if bid is not None and ask is not None and not bid < ask:
        raise row.bad(f"bid must be below ask, got bid {bid} ask {ask}")
    if price is None and bid is None:
        raise row.bad("the row has neither a trade (price, size) nor a quote (bid, ask)")
    return Print(row.required("symbol"), ts, price, size, bid, ask, bid_size, ask_size, row.line)


def _epoch_ms(row: _Row, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise row.bad(f"expected an integer epoch timestamp, got {text!r}") from None
    return _scale_epoch(value)


def _scale_epoch(value: int) -> int:
    """Epoch seconds, ms, us or ns to ms, told apart by magnitude (valid 1973-5138)."""
    magnitude = abs(value)
    if magnitude >= 10**17:
        return value // 1_000_000
    if magnitude >= 10**14:
        return value // 1_000
    if magnitude >= 10**11:
        return value
    return value * 1000


def _timestamp_ms(row: _Row, text: str) -> int:
    if text.lstrip("-").isdigit():
        return _scale_epoch(int(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise row.bad(f"ts is neither ISO-8601 nor an epoch number: {text!r}") from None
    if moment.tzinfo is None:
        raise row.bad(f"ts needs a UTC offset (like Z or -05:00) to be unambiguous: {text!r}")
    return round(moment.timestamp() * 1000)


_PARSERS: dict[str, Callable[[_Row, str, DayWindow | None], Record]] = {
    "yahoo_daily": _daily,
    "stooq_daily": _daily,
    "polygon_minute_aggs": _polygon_minute,
    "polygon_day_aggs": _polygon_day,
    "generic_trades": _generic,
}
