"""The `replay` feed: recorded history played back as ticks, optionally looped and shifted to today.

Building the feed reads the file once (rows of the configured symbols only), expands bars
into trades, and lays out a timeline in the data's own time, with session statuses and day
rollovers from the calendar. `run()` plays that timeline: each pass shifts it by whole days
(to today with `rebase_time`, then to the next trading day for each `loop`), so timestamps
keep increasing and keep their time of day across daylight-saving changes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from feeds.bars import bar_prices, bar_times, split_volume
from feeds.base import Emit, NewDay, Quote, Status, SymbolSpec, Tick, Trade
from feeds.calendar import STATUS_OF, Calendar, CalendarConfig
from feeds.clock import MAX_CATCH_UP_S, MIN_SLEEP_S, SYSTEM_CLOCK, Clock
from feeds.replay_formats import ONE_SYMBOL_FORMATS, BadRowError, Bar, Print, ReplayFormat, header_problem, read_records
from feeds.rng import Uniform, stream
from feeds.schema import StrictModel, Symbol, TickSize, raise_errors, resolve_tick

if TYPE_CHECKING:
    from feeds.replay_formats import Record

log = logging.getLogger(__name__)

# At speed 0 the feed hands control back to the event loop after this many ticks.
_YIELD_EVERY = 1000
# Bad rows logged one by one before the rest are only counted.
_LOG_BAD_ROWS = 5
_AUTO_TICKS_PER_BAR = {"polygon_minute_aggs": 12}
_DAILY_TICKS_PER_BAR = 78  # one print per five minutes of a regular session
_LOT = 100
# Timeline kinds, in the order they go out at one instant: the day rolls over, statuses
# change, quotes, trades, and the end of the recording last.
_NEWDAY, _STATUS, _QUOTE, _TRADE, _END = 0, 1, 2, 3, 4


class ReplayError(ValueError):
    """The file cannot be replayed as configured; the message names the file (and line)."""


class ReplaySymbol(StrictModel):
    symbol: Symbol  # as published
    source: Annotated[str | None, Field(min_length=1, max_length=32)] = None  # as written in the file
    name: Annotated[str, Field(max_length=100)] = ""
    sector: Annotated[str, Field(max_length=50)] = ""
    tick_size: TickSize = "auto"
    prev_close: Annotated[float | None, Field(gt=0)] = None  # default: the first open or price

    @property
    def file_symbol(self) -> str:
        return self.source or self.symbol


def _symbol_entry(value: Any) -> Any:
    return {"symbol": value} if isinstance(value, str) else value


class ReplayConfig(StrictModel):
    kind: Literal["replay"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    # Relative paths are resolved against the `base_dir` in the validation context (the
    # config file's directory), else against the working directory.
    path: str
    format: ReplayFormat
    symbols: Annotated[list[Annotated[ReplaySymbol, BeforeValidator(_symbol_entry)]], Field(min_length=1)]
    speed: Annotated[float, Field(ge=0, le=1_000_000, description="1 = real time, 0 = as fast as possible")] = 1.0
    loop: bool = False
    rebase_time: bool = False  # shift the first day to today (the latest trading day)
    # Gaps in the data longer than this are played in this much time (times stay true).
    max_gap_s: Annotated[float | None, Field(gt=0)] = None
    ticks_per_bar: Annotated[int | None, Field(ge=1, le=100_000)] = None  # None: 12 per minute, 78 per day
    spread_ticks: Annotated[int, Field(ge=1, le=1000)] = 1  # of the quotes made up around bar prints
    calendar: CalendarConfig = CalendarConfig()
    bad_rows: Literal["skip", "error"] = "skip"
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0  # for the made-up detail inside bars

    @field_validator("path")
    @classmethod
    def _readable(cls, value: str, info: ValidationInfo) -> str:
        path = Path(value).expanduser()
        base = (info.context or {}).get("base_dir")
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return str(path.resolve())

    @model_validator(mode="before")
    @classmethod
    def _symbol_map(cls, data: Any) -> Any:
        """`symbol_map: {IN_FILE: PUBLISHED}` is shorthand for `source:` on symbol entries.

        Published names the map mentions but `symbols` does not list are added.
        """
        if not isinstance(data, dict) or "symbol_map" not in data:
            return data
        data = dict(data)
        mapping = data.pop("symbol_map")
        if not isinstance(mapping, dict):
            raise ValueError("symbol_map: expected a mapping of file symbol to published symbol")
        by_published = {str(v).upper(): str(k) for k, v in mapping.items()}
        entries = [_symbol_entry(e) for e in data.get("symbols") or []]
        listed = set()
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and isinstance(entry.get("symbol"), str):
                sym = entry["symbol"].upper()
                listed.add(sym)
                if sym in by_published and "source" not in entry:
                    entries[i] = {**entry, "source": by_published[sym]}
        entries += [{"symbol": pub, "source": src} for pub, src in by_published.items() if pub not in listed]
        data["symbols"] = entries
        return data

    @model_validator(mode="after")
    def _fits_file(self) -> ReplayConfig:
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        problem = header_problem(self.path, self.format)
        if problem:
            errors.append((("format",), problem, self.format))
        if self.format in ONE_SYMBOL_FORMATS and len(self.symbols) != 1:
            errors.append(
                (
                    ("symbols",),
                    f"a {self.format} file holds one symbol; list exactly one, got {len(self.symbols)}",
                    None,
                )
            )
        published: dict[str, int] = {}
        sources: dict[str, int] = {}
        for j, spec in enumerate(self.symbols):
            if spec.symbol in published:
                errors.append((("symbols", j, "symbol"), f"{spec.symbol} is listed twice", spec.symbol))
            if spec.file_symbol in sources and self.format not in ONE_SYMBOL_FORMATS:
                other = sources[spec.file_symbol]
                errors.append((("symbols", j), f"{spec.file_symbol} is already replayed as symbols[{other}]", None))
            published.setdefault(spec.symbol, j)
            sources.setdefault(spec.file_symbol, j)
        raise_errors(errors)
        return self

    def symbol_names(self) -> list[str]:
        return [s.symbol for s in self.symbols]

    def build(self) -> ReplayFeed:
        return ReplayFeed(self)


# A timeline entry: (data ts ms, kind, day index, symbol index, a, b, c, d).
Entry = tuple[int, int, int, int, Any, Any, Any, Any]


@dataclass(slots=True)
class _Track:
    """Per symbol, while laying out the timeline."""

    unit: Decimal
    inv_unit: float
    prev_close: int
    close: int | None = None  # last regular-session trade of the current day
    last: int | None = None  # last trade of the current day


class ReplayFeed:
    def __init__(self, config: ReplayConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = config.name
        self.config = config
        self.seed = config.seed
        self.bad_rows: list[BadRowError] = []
        self._clock = clock
        self._calendar: Calendar = config.calendar.build()
        records = self._load()
        self._specs, tracks = self._make_specs(records)
        self._timeline, self._days, self._wrap_closes = self._lay_out(records, tracks)

    # -- Feed --------------------------------------------------------------------------------

    def symbols(self) -> list[SymbolSpec]:
        return list(self._specs)

    async def run(self, emit: Emit) -> None:
        clock = self._clock
        speed = self.config.speed
        max_gap_ms = None if self.config.max_gap_s is None else self.config.max_gap_s * 1000
        names = [spec.symbol for spec in self._specs]
        origin = clock.monotonic()
        wall = 0.0  # wall seconds since `origin` at which the current entry is due
        previous: int | None = None
        unyielded = 0
        for number, offsets in enumerate(self._pass_offsets()):
            first_ts = self._timeline[0][0] + offsets[0]
            if number:  # a new pass is a new trading day
                for index, name in enumerate(names):
                    emit(NewDay(name, first_ts, self._wrap_closes[index]))
            for ts_data, kind, day, sym, a, b, c, d in self._timeline:
                ts = ts_data + offsets[day]
                if previous is not None and speed > 0:
                    gap = float(ts - previous)
                    if max_gap_ms is not None and gap > max_gap_ms:
                        gap = max_gap_ms
                    wall += gap / 1000 / speed
                    ahead = wall - (clock.monotonic() - origin)
                    if ahead > MIN_SLEEP_S:
                        await clock.sleep(ahead)
                    elif ahead < -MAX_CATCH_UP_S:
                        origin -= ahead + MAX_CATCH_UP_S  # resume at pace instead of bursting
                elif speed == 0:
                    unyielded += 1
                    if unyielded >= _YIELD_EVERY:
                        unyielded = 0
                        await clock.sleep(0)
                previous = ts
                emit(_tick(names[sym], ts, kind, a, b, c, d))
            if not self.config.loop:
                return

    # -- loading -----------------------------------------------------------------------------

    def _day_window(self, day: date) -> tuple[int, int]:
        regular = self.config.calendar.sessions.regular
        return round(self._calendar.at(day, regular.start) * 1000), round(self._calendar.at(day, regular.end) * 1000)

    def _load(self) -> list[Record]:
        config = self.config
        wanted = {spec.file_symbol for spec in config.symbols}
        daily_symbol = config.symbols[0].file_symbol
        last_ts: dict[str, int] = {}
        records: list[Record] = []
        for item in read_records(config.path, config.format, daily_symbol=daily_symbol, day_window=self._day_window):
            if isinstance(item, BadRowError):
                self._bad(item)
                continue
            if item.symbol not in wanted:
                continue
            ts = item.start_ms if isinstance(item, Bar) else item.ts_ms
            if ts < last_ts.get(item.symbol, ts):
                problem = f"time goes back for {item.symbol}: rows must be in time order"
                self._bad(BadRowError(config.path, item.line, problem))
                continue
            last_ts[item.symbol] = ts
            records.append(item)
        if len(self.bad_rows) > _LOG_BAD_ROWS:
            log.warning("Feed %r skipped %d bad rows in %s in all", self.name, len(self.bad_rows), config.path)
        missing = wanted - {r.symbol for r in records}
        if missing:
            raise ReplayError(f"{config.path}: no usable rows for {', '.join(sorted(missing))}")
        # Files sorted by ticker (Polygon's) interleave into one stream in time order.
        records.sort(key=lambda r: (r.start_ms if isinstance(r, Bar) else r.ts_ms, r.line))
        return records

    def _bad(self, bad: BadRowError) -> None:
        if self.config.bad_rows == "error":
            raise ReplayError(str(bad)) from None
        self.bad_rows.append(bad)
        if len(self.bad_rows) <= _LOG_BAD_ROWS:
            log.warning("Feed %r skips a bad row: %s", self.name, bad)

    def _make_specs(self, records: list[Record]) -> tuple[list[SymbolSpec], dict[str, tuple[int, _Track]]]:
        first_price: dict[str, float] = {}
        for record in records:
            price = record.open if isinstance(record, Bar) else (record.price or record.bid)
            if price is not None:
                first_price.setdefault(record.symbol, price)
        specs = []
        tracks: dict[str, tuple[int, _Track]] = {}
        for index, spec in enumerate(self.config.symbols):
            first = first_price[spec.file_symbol]
            unit, _ = resolve_tick(spec.tick_size, first)
            prev_close = spec.prev_close if spec.prev_close is not None else first
            prev_ticks = max(1, round(Decimal(str(prev_close)) / unit))
            specs.append(SymbolSpec(spec.symbol, unit, prev_ticks, name=spec.name, sector=spec.sector))
            tracks[spec.file_symbol] = (index, _Track(unit, 1.0 / float(unit), prev_ticks))
        return specs, tracks

    # -- timeline ----------------------------------------------------------------------------

    def _lay_out(
        self, records: list[Record], tracks: dict[str, tuple[int, _Track]]
    ) -> tuple[list[Entry], list[date], list[int]]:
        calendar = self._calendar
        prints: list[tuple[int, int, int, Any, Any, Any, Any]] = []  # (ts, kind, sym, a, b, c, d)
        for record in records:
            index, track = tracks[record.symbol]
            prints.extend(self._prints(record, index, track))
        prints.sort(key=lambda p: p[0])  # stable: rows at one instant keep their file order
        day_of = _LocalDays(calendar)
        days = sorted({day_of(p[0]) for p in prints})
        day_index = {day: k for k, day in enumerate(days)}
        first_ts, last_ts = prints[0][0], prints[-1][0]
        count = len(tracks)
        by_index = sorted(tracks.values(), key=lambda item: item[0])

        timeline: list[Entry] = []
        # Session statuses of every data day, inside the span of the data.
        status_now = self._status_at(first_ts)
        for sym in range(count):
            timeline.append((first_ts, _STATUS, 0, sym, status_now, "replay starts", None, None))
        for k, day in enumerate(days):
            segments = calendar.day_segments(day)
            marks = [(s.start, STATUS_OF[s.kind]) for s in segments] + [(segments[-1].end, "closed")]
            for at_s, status in marks:
                at = round(at_s * 1000)
                if first_ts < at <= last_ts:
                    for sym in range(count):
                        timeline.append((at, _STATUS, k, sym, status, _REASON[status], None, None))
        last_day = len(days) - 1
        for sym in range(count):
            timeline.append((last_ts, _END, last_day, sym, "closed", "end of the recording", None, None))

        # Prints, with each new day's rollover placed before its first event.
        current_day = days[0]
        first_of_day = {day: round(calendar.day_segments(day)[0].start * 1000) for day in days}
        regular = {day: self._day_window(day) for day in days}
        for ts, kind, sym, a, b, c, d in prints:
            day = day_of(ts)
            if day != current_day:
                rollover = min(ts, first_of_day[day])
                for index, track in by_index:
                    track.prev_close = track.close if track.close is not None else (track.last or track.prev_close)
                    track.close = track.last = None
                    timeline.append((rollover, _NEWDAY, day_index[day], index, track.prev_close, None, None, None))
                current_day = day
            if kind == _TRADE:
                track = by_index[sym][1]
                track.last = a
                start, end = regular[day]
                if start <= ts < end:
                    track.close = a
            timeline.append((ts, kind, day_index[day], sym, a, b, c, d))
        wrap = [t.close if t.close is not None else (t.last or t.prev_close) for _, t in by_index]
        timeline.sort(key=lambda e: (e[0], e[1]))  # stable: same-instant entries keep their order
        return _without_repeats(timeline, count), days, wrap

    def _status_at(self, ts_ms: int) -> str:
        return STATUS_OF[next(self._calendar.segments_from(ts_ms / 1000)).kind]

    def _prints(self, record: Record, sym: int, track: _Track) -> Iterator[tuple[int, int, int, Any, Any, Any, Any]]:
        if isinstance(record, Print):
            if record.bid is not None and record.ask is not None:
                bid, ask = _units(record.bid, track), _units(record.ask, track)
                if ask <= bid:
                    ask = bid + 1  # distinct prices that round to one tick
                # A quote without sizes shows one round lot a side: sizes on the wire are positive.
                bid_size, ask_size = record.bid_size or _LOT, record.ask_size or _LOT
                yield (record.ts_ms, _QUOTE, sym, bid, bid_size, ask, ask_size)
            if record.price is not None and record.size:
                yield (record.ts_ms, _TRADE, sym, _units(record.price, track), record.size, None, None)
            return
        yield from self._expand(record, sym, track)

    def _expand(self, bar: Bar, sym: int, track: _Track) -> Iterator[tuple[int, int, int, Any, Any, Any, Any]]:
        uniform: Uniform = stream(self.seed, self.name, bar.symbol, str(bar.start_ms)).random
        o, h, low, c = (_units(p, track) for p in (bar.open, bar.high, bar.low, bar.close))
        wanted = self.config.ticks_per_bar or _AUTO_TICKS_PER_BAR.get(self.config.format, _DAILY_TICKS_PER_BAR)
        trades = min(wanted, bar.volume)
        if trades == 0:  # no volume: the bar still tells where the market stood
            yield (bar.start_ms, _QUOTE, sym, *self._quote_around(c, uniform))
            return
        prices = bar_prices(o, h, low, c, trades, uniform)
        sizes = split_volume(bar.volume, trades, uniform)
        times = bar_times(bar.end_ms - bar.start_ms, trades, uniform)
        for price, size, offset in zip(prices, sizes, times, strict=True):
            ts = bar.start_ms + offset
            yield (ts, _QUOTE, sym, *self._quote_around(price, uniform))
            yield (ts, _TRADE, sym, price, size, None, None)

    def _quote_around(self, price: int, uniform: Uniform) -> tuple[int, int, int, int]:
        """A quote the print at `price` can have traded against: at its bid or its ask."""
        spread = self.config.spread_ticks
        size_bid, size_ask = 100 * (1 + int(uniform() * 5)), 100 * (1 + int(uniform() * 5))
        if uniform() < 0.5 and price - spread >= 1:
            return price - spread, size_bid, price, size_ask  # a buyer lifted the ask
        return price, size_bid, price + spread, size_ask

    # -- passes ------------------------------------------------------------------------------

    def _pass_offsets(self) -> Iterator[list[int]]:
        """Per pass, the shift (ms) of each data day: whole days, in local time."""
        calendar = self._calendar
        days = self._days
        span = days[-1] - days[0]
        if self.config.rebase_time:
            start = calendar.trading_day_on_or_before(calendar.local_date(self._clock.time()))
        else:
            start = days[0]
        for _ in itertools.count():
            yield [_shift_ms(calendar, day, start + (day - days[0])) for day in days]
            start = calendar.next_trading_day(start + span)


_REASON = {
    "pre": "pre-market session",
    "open": "regular session",
    "post": "after-hours session",
    "closed": "market closed",
}


class _LocalDays:
    """Local date of a Unix-ms time, remembering the last day's span (times mostly ascend)."""

    def __init__(self, calendar: Calendar) -> None:
        self._calendar = calendar
        self._span = (0, 0)
        self._day = date.min

    def __call__(self, ts_ms: int) -> date:
        start, end = self._span
        if not start <= ts_ms < end:
            self._day = self._calendar.local_date(ts_ms / 1000)
            self._span = (
                round(self._calendar.at(self._day, 0) * 1000),
                round(self._calendar.at(self._day, 86400) * 1000),
            )
        return self._day


def _units(price: float, track: _Track) -> int:
    return max(1, round(price * track.inv_unit))


def _shift_ms(calendar: Calendar, day: date, to: date) -> int:
    if day == to:
        return 0
    zone = calendar.zone
    source = datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
    target = datetime(to.year, to.month, to.day, tzinfo=zone).timestamp()
    return round((target - source) * 1000)


def _without_repeats(timeline: list[Entry], count: int) -> list[Entry]:
    """Drop status entries that would not change the symbol's status."""
    status: list[str | None] = [None] * count
    out = []
    for entry in timeline:
        kind, sym = entry[1], entry[3]
        if kind in (_STATUS, _END):
            if status[sym] == entry[4]:
                continue
            status[sym] = entry[4]
        out.append(entry)
    return out


def _tick(symbol: str, ts: int, kind: int, a: Any, b: Any, c: Any, d: Any) -> Tick:
    if kind == _TRADE:
        return Trade(symbol, ts, a, b)
    if kind == _QUOTE:
        return Quote(symbol, ts, a, b, c, d)
    if kind in (_STATUS, _END):
        return Status(symbol, ts, a, b)
    return NewDay(symbol, ts, a)
