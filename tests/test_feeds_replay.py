"""The `replay` feed: every format from small fixtures, bar expansion, pacing, loops, bad rows, round trip."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from feeds.bars import bar_prices, split_volume
from feeds.base import NewDay, Quote, Status, Tick, Trade
from feeds.clock import VirtualClock
from feeds.market_config import MarketConfig
from feeds.recording import TradesWriter
from feeds.replay import ReplayConfig, ReplayError, ReplayFeed
from feeds.rng import stream

NEW_YORK = ZoneInfo("America/New_York")
SAMPLE = Path(__file__).resolve().parent.parent / "feeds" / "data" / "sample-minute-aggs.csv.gz"

YAHOO = """Date,Open,High,Low,Close,Adj Close,Volume
2024-03-05,170.76,172.04,169.62,170.12,169.88,95132400
2024-03-06,171.06,171.24,168.68,169.12,168.88,68587700
2024-03-07,169.15,170.73,168.49,169.00,168.76,71765100
"""
STOOQ = """Date,Open,High,Low,Close,Volume
2024-03-05,170.76,172.04,169.62,170.12,95132400
2024-03-06,171.06,171.24,168.68,169.12,68587700
"""
# Polygon day files are sorted by ticker, then time: the feed must interleave them.
POLYGON_MINUTE = """ticker,volume,open,close,high,low,window_start,transactions
AAA,1200,10.00,10.04,10.05,9.98,1709821800000000000,12
AAA,800,10.04,10.01,10.06,10.00,1709821860000000000,9
BBB,5000,50.10,50.00,50.12,49.95,1709821800000000000,40
BBB,3,50.00,50.01,50.01,50.00,1709821860000000000,1
"""
POLYGON_DAY = """ticker,volume,open,close,high,low,window_start,transactions
AAA,1000000,10.00,10.40,10.50,9.90,1709787600000000000,9000
AAA,900000,10.40,10.10,10.45,10.00,1709874000000000000,8000
"""
GENERIC = """ts,symbol,price,size,bid,ask,bid_size,ask_size
2024-03-07T14:30:00.000Z,AAA,10.01,100,10.00,10.01,300,200
2024-03-07T14:30:00.250Z,AAA,,,10.01,10.02,100,400
1709821800500000000,AAA,10.02,35,,,,
2024-03-07T09:30:00.750-05:00,AAA,10.01,200,,,,
"""


def write(tmp_path: Path, name: str, text: str, *, gz: bool = False) -> Path:
    path = tmp_path / name
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def replay(path: Path, fmt: str, symbols: list[Any], clock: VirtualClock | None = None, **extra: Any) -> ReplayFeed:
    config = ReplayConfig.model_validate(
        {"kind": "replay", "name": "rp", "path": str(path), "format": fmt, "symbols": symbols, "speed": 0, **extra}
    )
    return ReplayFeed(config, clock=clock or VirtualClock())


def play(feed: ReplayFeed, clock: VirtualClock | None = None, limit: int = 1_000_000) -> list[Tick]:
    """Run the feed to its end (or `limit` ticks) and return what it emitted."""
    ticks: list[Tick] = []

    class EnoughError(Exception):
        pass

    def emit(tick: Tick) -> None:
        ticks.append(tick)
        if len(ticks) >= limit:
            raise EnoughError

    with contextlib.suppress(EnoughError):
        asyncio.run(feed.run(emit))
    return ticks


def check_bars_expand_faithfully(
    ticks: list[Tick], bars: dict[str, list[tuple[float, float, int]]], unit: float
) -> None:
    """Per symbol and bar, in order: trades inside [low, high], volumes summing to the bar's."""
    trades: dict[str, list[Trade]] = defaultdict(list)
    for tick in ticks:
        if isinstance(tick, Trade):
            trades[tick.symbol].append(tick)
    for symbol, expected in bars.items():
        mine = trades[symbol]
        assert sum(t.size for t in mine) == sum(volume for _, _, volume in expected)
        for low, high, _ in expected:
            assert all(round(low / unit) <= t.price_ticks <= round(high / unit) for t in mine if t.size)


class TestFormats:
    def test_yahoo_daily_bars_become_sessions_of_trades(self, tmp_path: Path) -> None:
        """Each Yahoo row plays as one regular session: open at 09:30, the bar's volume, its close last."""
        feed = replay(write(tmp_path, "aapl.csv", YAHOO), "yahoo_daily", ["AAPL"])
        ticks = play(feed)
        trades = [t for t in ticks if isinstance(t, Trade)]
        by_day: dict[date, list[Trade]] = defaultdict(list)
        for trade in trades:
            by_day[datetime.fromtimestamp(trade.ts / 1000, NEW_YORK).date()].append(trade)
        assert sorted(by_day) == [date(2024, 3, 5), date(2024, 3, 6), date(2024, 3, 7)]
        day = by_day[date(2024, 3, 5)]
        assert (day[0].price_ticks, day[-1].price_ticks) == (17076, 17012)
        assert max(t.price_ticks for t in day) == 17204 and min(t.price_ticks for t in day) == 16962
        assert sum(t.size for t in day) == 95132400 and len(day) == 78
        opened = datetime.fromtimestamp(day[0].ts / 1000, NEW_YORK)
        assert (opened.hour, opened.minute) == (9, 30)
        assert [t.prev_close_ticks for t in ticks if isinstance(t, NewDay)] == [17012, 16912]
        assert feed.symbols()[0].prev_close_ticks == 17076  # no prev_close given: the first open

    def test_stooq_daily_without_adj_close(self, tmp_path: Path) -> None:
        """Stooq's variant (no Adj Close) reads the same way."""
        ticks = play(replay(write(tmp_path, "s.csv", STOOQ), "stooq_daily", [{"symbol": "AAPL.S"}]))
        trades = [t for t in ticks if isinstance(t, Trade)]
        assert {t.symbol for t in trades} == {"AAPL.S"}
        assert sum(t.size for t in trades) == 95132400 + 68587700

    def test_polygon_minute_aggs_gzip_interleave_in_time(self, tmp_path: Path) -> None:
        """Gzipped Polygon minute bars sorted by ticker replay in time order, each bar faithfully."""
        path = write(tmp_path, "2024-03-07.csv.gz", POLYGON_MINUTE, gz=True)
        ticks = play(replay(path, "polygon_minute_aggs", ["AAA", "BBB"]))
        stamps = [t.ts for t in ticks]
        assert stamps == sorted(stamps)
        symbols_in_first_minute = {t.symbol for t in ticks if isinstance(t, Trade) and t.ts < 1709821860000}
        assert symbols_in_first_minute == {"AAA", "BBB"}
        check_bars_expand_faithfully(ticks, {"AAA": [(9.98, 10.06, 2000)], "BBB": [(49.95, 50.12, 5003)]}, 0.01)
        bbb_last = [t for t in ticks if isinstance(t, Trade) and t.symbol == "BBB" and t.ts >= 1709821860000]
        assert len(bbb_last) == 3 and {t.size for t in bbb_last} == {1}  # volume 3: three 1-share prints

    def test_polygon_day_aggs(self, tmp_path: Path) -> None:
        """Polygon day bars (window_start at New York midnight, in ns) play on their own dates."""
        ticks = play(replay(write(tmp_path, "d.csv", POLYGON_DAY), "polygon_day_aggs", ["AAA"]))
        days = {datetime.fromtimestamp(t.ts / 1000, NEW_YORK).date() for t in ticks if isinstance(t, Trade)}
        assert days == {date(2024, 3, 7), date(2024, 3, 8)}
        assert sum(t.size for t in ticks if isinstance(t, Trade)) == 1_900_000

    def test_generic_trades_with_quotes_iso_and_epoch(self, tmp_path: Path) -> None:
        """The generic format takes ISO or epoch-ns times, optional quote columns, and quote-only rows."""
        ticks = play(replay(write(tmp_path, "g.csv", GENERIC), "generic_trades", ["AAA"]))
        prints = [t for t in ticks if isinstance(t, Trade | Quote)]
        assert prints == [
            Quote("AAA", 1709821800000, 1000, 300, 1001, 200),
            Trade("AAA", 1709821800000, 1001, 100),
            Quote("AAA", 1709821800250, 1001, 100, 1002, 400),
            Trade("AAA", 1709821800500, 1002, 35),
            Trade("AAA", 1709821800750, 1001, 200),
        ]
        assert isinstance(ticks[0], Status) and ticks[0].status == "open"
        assert isinstance(ticks[-1], Status) and ticks[-1].status == "closed"

    def test_quote_without_sizes_shows_a_round_lot(self, tmp_path: Path) -> None:
        """A recorded quote lacking sizes still goes out with positive sizes (one round lot)."""
        text = "ts,symbol,price,size,bid,ask\n2024-03-07T14:30:00Z,AAA,,,10.00,10.02\n"
        quotes = [
            t for t in play(replay(write(tmp_path, "q.csv", text), "generic_trades", ["AAA"])) if isinstance(t, Quote)
        ]
        assert quotes == [Quote("AAA", 1709821800000, 1000, 100, 1002, 100)]

    def test_shipped_sample_replays_cleanly(self) -> None:
        """The sample file made by feeds/data/make_sample.py parses without a bad row and plays both symbols."""
        feed = replay(SAMPLE, "polygon_minute_aggs", ["ACME", {"symbol": "INIT", "name": "Initech Inc."}])
        ticks = play(feed)
        assert feed.bad_rows == []
        assert {t.symbol for t in ticks if isinstance(t, Trade)} == {"ACME", "INIT"}
        assert sum(isinstance(t, Trade) for t in ticks) == 2 * 390 * 12


class TestBars:
    @pytest.mark.parametrize("points", [1, 2, 3, 4, 5, 12, 100])
    def test_path_starts_at_open_ends_at_close_and_stays_in_range(self, points: int) -> None:
        """A bar path has the requested length, opens and closes right, touches high and low, stays inside."""
        uniform = stream(1, "bars", str(points)).random
        prices = bar_prices(1000, 1010, 990, 1004, points, uniform)
        assert len(prices) == points
        assert prices[-1] == 1004
        assert all(990 <= p <= 1010 for p in prices)
        if points >= 2:
            assert prices[0] == 1000
        if points >= 4:
            assert {990, 1010} <= set(prices)

    def test_nearer_extreme_comes_first(self) -> None:
        """A bar that opens near its high visits the high before the low."""
        prices = bar_prices(1009, 1010, 990, 1000, 4, stream(1, "x").random)
        assert prices == [1009, 1010, 990, 1000]

    def test_volume_splits_exactly(self) -> None:
        """Split sizes are positive and sum to the volume, for every seed."""
        for seed in range(50):
            sizes = split_volume(1234, 17, stream(seed, "v").random)
            assert sum(sizes) == 1234 and min(sizes) >= 1 and len(sizes) == 17


class TestPlayback:
    def test_speed_zero_never_waits(self, tmp_path: Path) -> None:
        """At speed 0 the whole file plays with zero-length yields only: no wall time passes."""
        clock = VirtualClock()
        ticks = play(replay(SAMPLE, "polygon_minute_aggs", ["ACME"], clock=clock), clock)
        assert len(ticks) > 9000
        assert clock.monotonic() == 0.0
        assert clock.sleeps >= len(ticks) // 1000  # it still lets the event loop breathe

    def test_speed_scales_wall_time(self, tmp_path: Path) -> None:
        """At speed 60 a 6.5-hour session takes 6.5 minutes of (virtual) wall time."""
        clock = VirtualClock()
        feed = replay(SAMPLE, "polygon_minute_aggs", ["ACME"], clock=clock, speed=60)
        ticks = play(feed, clock)
        span_s = (ticks[-1].ts - ticks[0].ts) / 1000
        assert clock.monotonic() == pytest.approx(span_s / 60, abs=0.05)
        assert span_s > 6 * 3600

    def test_max_gap_compresses_the_night(self, tmp_path: Path) -> None:
        """With max_gap_s, the night between two daily bars takes seconds, while timestamps keep the truth."""
        clock = VirtualClock()
        feed = replay(write(tmp_path, "a.csv", STOOQ), "stooq_daily", ["AAPL"], clock=clock, speed=3600, max_gap_s=5)
        ticks = play(feed, clock)
        assert (ticks[-1].ts - ticks[0].ts) / 1000 > 24 * 3600
        assert clock.monotonic() < 2 * 6.5 + 10  # two sessions of 6.5 s plus a few compressed gaps

    def test_loop_rebased_to_today_keeps_time_increasing(self, tmp_path: Path) -> None:
        """Looping a day rebased to today: each pass is the next trading day, at the same time of day."""
        today = datetime(2025, 6, 13, 12, 0, tzinfo=NEW_YORK)  # a Friday
        clock = VirtualClock(today.timestamp())
        feed = replay(SAMPLE, "polygon_minute_aggs", ["ACME"], clock=clock, loop=True, rebase_time=True)
        ticks = play(feed, clock, limit=25_000)  # two passes and part of a third
        stamps = [t.ts for t in ticks]
        assert stamps == sorted(stamps)
        rollovers = [t for t in ticks if isinstance(t, NewDay)]
        assert len(rollovers) == 2
        trade_days = sorted(
            {datetime.fromtimestamp(t.ts / 1000, NEW_YORK).date() for t in ticks if isinstance(t, Trade)}
        )
        assert trade_days == [date(2025, 6, 13), date(2025, 6, 16), date(2025, 6, 17)]
        first_trade = next(t for t in ticks if isinstance(t, Trade))
        assert datetime.fromtimestamp(first_trade.ts / 1000, NEW_YORK).strftime("%H:%M") == "09:30"
        last_close = [t for t in ticks if isinstance(t, Trade) and t.ts < rollovers[0].ts][-1]
        assert rollovers[0].prev_close_ticks == last_close.price_ticks

    def test_source_renames_a_symbol(self, tmp_path: Path) -> None:
        """`source` maps a file's symbol to another published name (the symbol map)."""
        feed = replay(SAMPLE, "polygon_minute_aggs", [{"symbol": "ACME.R", "source": "ACME"}])
        assert [s.symbol for s in feed.symbols()] == ["ACME.R"]
        assert {t.symbol for t in play(feed, limit=100)} == {"ACME.R"}

    def test_symbol_map_is_shorthand_for_source(self, tmp_path: Path) -> None:
        """`symbol_map: {file: published}` renames like `source`, adding symbols it names."""
        feed = replay(SAMPLE, "polygon_minute_aggs", [{"symbol": "ACME.R", "name": "Acme"}],
                      symbol_map={"ACME": "ACME.R", "INIT": "INI"})  # fmt: skip
        assert sorted(s.symbol for s in feed.symbols()) == ["ACME.R", "INI"]
        assert {t.symbol for t in play(feed, limit=400)} == {"ACME.R", "INI"}


class TestBadRows:
    BAD = """ts,symbol,price,size
2024-03-07T14:30:00Z,AAA,10.00,100
2024-03-07T14:30:01Z,AAA,-3,100
2024-03-07T14:30:02Z,AAA,ten,100
not-a-time,AAA,10.00,100
2024-03-07T14:30:03,AAA,10.00,100
2024-03-07T14:29:00Z,AAA,10.00,100
2024-03-07T14:30:04Z,AAA,10.01,100
"""

    def test_bad_rows_are_skipped_and_reported_with_file_and_line(self, tmp_path: Path) -> None:
        """Each unusable row is reported as file:line with the reason; the good rows still play."""
        path = write(tmp_path, "bad.csv", self.BAD)
        feed = replay(path, "generic_trades", ["AAA"])
        reports = [str(bad) for bad in feed.bad_rows]
        assert [bad.line for bad in feed.bad_rows] == [3, 4, 5, 6, 7]
        assert all(report.startswith(f"{path.resolve()}:") for report in reports)
        assert "price must be a positive price" in reports[0]
        assert "not a number" in reports[1]
        assert "neither ISO-8601 nor an epoch" in reports[2]
        assert "needs a UTC offset" in reports[3]
        assert "time goes back" in reports[4]
        assert [t.price_ticks for t in play(feed) if isinstance(t, Trade)] == [1000, 1001]

    def test_bad_rows_error_mode_fails_at_the_first(self, tmp_path: Path) -> None:
        """With bad_rows: error, building the feed fails naming the file and the line."""
        path = write(tmp_path, "bad.csv", self.BAD)
        with pytest.raises(ReplayError, match=rf"{path.name}:3: price must be a positive price, got '-3'"):
            replay(path, "generic_trades", ["AAA"], bad_rows="error")

    def test_bar_outside_its_range_is_bad(self, tmp_path: Path) -> None:
        """A bar whose close is above its high is reported, with its line."""
        text = YAHOO.replace("2024-03-06,171.06,171.24,168.68,169.12", "2024-03-06,171.06,171.24,168.68,172.00")
        feed = replay(write(tmp_path, "y.csv", text), "yahoo_daily", ["AAPL"])
        assert [(bad.line, "low <= open, close <= high" in bad.problem) for bad in feed.bad_rows] == [(3, True)]

    def test_symbol_without_rows_is_an_error(self, tmp_path: Path) -> None:
        """Asking for a symbol the file does not hold fails at build time, naming it."""
        with pytest.raises(ReplayError, match="no usable rows for ZZZ"):
            replay(write(tmp_path, "g.csv", GENERIC), "generic_trades", ["AAA", "ZZZ"])


def test_record_then_replay_round_trip(tmp_path: Path) -> None:
    """Ticks of a simulated market written in the generic format replay as the same trades and quotes."""
    config = MarketConfig.model_validate(
        {
            "kind": "market",
            "name": "rec",
            "seed": 5,
            "time_scale": 60,
            "start": "2025-03-03T09:30:00-05:00",
            "symbols": [{"symbol": "AAPL", "price": 190.0}, {"symbol": "SIRI", "price": 0.8125}],
        }
    )
    market = config.build()
    sim = market.simulation()
    recorded: list[Tick] = []
    sim.start(recorded.append)
    sim.advance(sim.now + 1800, recorded.append)
    text = io.StringIO()
    writer = TradesWriter(text, market.symbols())
    for tick in recorded:
        writer.write(tick)
    path = write(tmp_path, "session.csv.gz", text.getvalue(), gz=True)
    specs = [{"symbol": s.symbol, "tick_size": str(s.tick_size)} for s in market.symbols()]
    replayed = play(replay(path, "generic_trades", specs))
    prints = [t for t in recorded if isinstance(t, Trade | Quote)]
    assert len(prints) > 500
    assert [t for t in replayed if isinstance(t, Trade | Quote)] == prints
