"""The `market` feed: invariants, statistics, sessions, scenarios and determinism, without sleeping."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import statistics
from collections import defaultdict
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from feeds.base import STATUSES, NewDay, Quote, Status, Tick, Trade
from feeds.calendar import CalendarConfig
from feeds.clock import MIN_SLEEP_S, VirtualClock
from feeds.holidays import easter, nyse_holidays
from feeds.market import MarketFeed
from feeds.market_config import MarketConfig
from feeds.microstructure import round_lot
from feeds.simulation import Simulation

NEW_YORK = ZoneInfo("America/New_York")
MONDAY_OPEN = "2025-03-03T09:30:00-05:00"


def market(**overrides: Any) -> MarketConfig:
    base: dict[str, Any] = {
        "kind": "market",
        "name": "sim",
        "seed": 11,
        "time_scale": 60,
        "start": MONDAY_OPEN,
        "symbols": [{"symbol": "AAPL", "price": 190.0}],
    }
    return MarketConfig.model_validate({**base, **overrides})


def generate(config: MarketConfig, market_seconds: float) -> list[Tick]:
    sim = config.build().simulation()
    ticks: list[Tick] = []
    sim.start(ticks.append)
    sim.advance(sim.now + market_seconds, ticks.append)
    return ticks


def fingerprint(ticks: list[Tick]) -> str:
    return hashlib.sha256("\n".join(map(repr, ticks)).encode()).hexdigest()


# A market with every feature on: factors, a correlated pair, jumps, a volatility regime,
# a sub-dollar stock that crosses $1, an explicit tick size, pre/post sessions, scenarios.
RICH: dict[str, Any] = {
    "factors": {"market": {"volatility": 0.16}, "tech": {"volatility": 0.12}},
    "correlations": [["KO", "PEP", 0.65]],
    "volatility_regime": {"half_life_s": 1800, "vol_of_vol": 0.4, "leverage": -0.5},
    "defaults": {"trades_per_sec": 3, "loadings": {"market": 1.0}},
    "scenarios": [
        {"at": "11:00", "action": "halt", "symbols": ["XOM"], "duration_s": 900, "reopen_jump_pct": -4},
        {"at": "10:15", "action": "jump", "symbols": ["PENY"], "return_pct": 12},
        {"at": "14:00", "action": "factor_shock", "factor": "market", "return_pct": -1.5, "over_s": 120},
        {"at": "15:00", "action": "volatility", "multiplier": 2.0, "duration_s": 1800},
    ],
    "symbols": [
        {"symbol": "AAPL", "price": 190.0, "volatility": 0.24, "loadings": {"market": 1.1, "tech": 0.5}},
        {"symbol": "XOM", "price": 110.0, "volatility": 0.28, "jumps": {"rate_per_year": 50, "stdev_pct": 3}},
        {"symbol": "KO", "price": 62.1, "volatility": 0.16},
        {"symbol": "PEP", "price": 171.4, "volatility": 0.18},
        {"symbol": "PENY", "price": 0.97, "volatility": 1.2, "min_spread_ticks": 3, "loadings": {"market": 0.5}},
        {"symbol": "GRID", "price": 101.3, "tick_size": 0.05, "volatility": 0.5},
        {"symbol": "BRKA", "price": 700_000.0, "volatility": 0.2, "trades_per_sec": 0.5},
    ],
}


@pytest.fixture(scope="module")
def rich_run() -> tuple[MarketConfig, list[Tick]]:
    config = market(**{**RICH, "time_scale": 300})
    return config, generate(config, 4 * 86400)  # Monday open to Friday open: 4 days, 4 nights


class TestInvariants:
    def test_quotes_are_on_the_grid_uncrossed_and_positive(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """Every quote has 0 < bid < ask and positive sizes; a sub-dollar stock quotes whole cents above $1."""
        _, ticks = rich_run
        quotes = [t for t in ticks if isinstance(t, Quote)]
        assert len(quotes) > 20_000
        for q in quotes:
            assert 0 < q.bid_ticks < q.ask_ticks, q
            assert q.bid_size > 0 and q.ask_size > 0, q
        above_a_dollar = [q for q in quotes if q.symbol == "PENY" and q.bid_ticks >= 10_000]
        assert above_a_dollar, "the jump scenario should lift PENY above $1"
        assert all(q.bid_ticks % 100 == 0 and q.ask_ticks % 100 == 0 for q in above_a_dollar)
        below = [q for q in quotes if q.symbol == "PENY" and q.ask_ticks < 10_000]
        assert any(q.bid_ticks % 100 for q in below), "below $1 the stock quotes in $0.0001"

    def test_trades_print_inside_the_prevailing_quote(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """A trade's price lies within the symbol's last quote, and its size is positive."""
        _, ticks = rich_run
        last: dict[str, Quote] = {}
        trades = 0
        for tick in ticks:
            if isinstance(tick, Quote):
                last[tick.symbol] = tick
            elif isinstance(tick, Trade):
                quote = last[tick.symbol]
                assert quote.bid_ticks <= tick.price_ticks <= quote.ask_ticks, (quote, tick)
                assert tick.size > 0
                trades += 1
        assert trades > 5_000

    def test_timestamps_never_go_back(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """Timestamps are non-decreasing per symbol and over the whole stream."""
        _, ticks = rich_run
        stamps = [t.ts for t in ticks]
        assert stamps == sorted(stamps)
        assert stamps[-1] - stamps[0] > 3 * 86400 * 1000

    def test_day_statistics_hold(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """Within a day, low <= last <= high and volume only grows; NewDay carries the regular-session close."""
        config, ticks = rich_run
        day: dict[str, dict[str, int]] = defaultdict(lambda: {"volume": 0})
        status: dict[str, str] = {}
        regular_close: dict[str, int] = {}
        rollovers = 0
        for tick in ticks:
            if isinstance(tick, NewDay):
                if tick.symbol in regular_close:
                    assert tick.prev_close_ticks == regular_close[tick.symbol]
                day[tick.symbol] = {"volume": 0}
                rollovers += 1
            elif isinstance(tick, Status):
                status[tick.symbol] = tick.status
            elif isinstance(tick, Trade):
                stats = day[tick.symbol]
                before = stats["volume"]
                stats["volume"] += tick.size
                assert stats["volume"] > before
                stats["high"] = max(stats.get("high", tick.price_ticks), tick.price_ticks)
                stats["low"] = min(stats.get("low", tick.price_ticks), tick.price_ticks)
                assert stats["low"] <= tick.price_ticks <= stats["high"]
                if status[tick.symbol] == "open":
                    regular_close[tick.symbol] = tick.price_ticks
        assert rollovers == 4 * len(config.symbols)

    def test_no_prints_while_closed_or_halted(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """Statuses are valid wire values, and nothing trades or quotes while closed or halted."""
        _, ticks = rich_run
        status: dict[str, str] = {}
        seen: set[str] = set()
        for tick in ticks:
            if isinstance(tick, Status):
                assert tick.status in STATUSES
                status[tick.symbol] = tick.status
                seen.add(tick.status)
            elif isinstance(tick, Trade | Quote):
                assert status[tick.symbol] not in ("closed", "halted"), tick
        assert seen == set(STATUSES)

    def test_new_day_comes_before_the_days_first_event(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """Every symbol gets NewDay, then the pre-market status, before any print of a new day."""
        _, ticks = rich_run
        for sym in ("AAPL", "PENY"):
            mine = [t for t in ticks if t.symbol == sym]
            for i, tick in enumerate(mine):
                if isinstance(tick, NewDay):
                    before, after = mine[i - 1], mine[i + 1]
                    assert isinstance(after, Status) and after.status == "pre" and after.ts == tick.ts
                    assert isinstance(before, Status) and before.status == "closed"

    def test_quotes_outnumber_trades(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """With quotes_per_trade 3, quotes are at least three times the trades."""
        _, ticks = rich_run
        quotes = sum(isinstance(t, Quote) for t in ticks)
        trades = sum(isinstance(t, Trade) for t in ticks)
        assert quotes >= 3 * trades


STATS_DAYS = 60
STATS_VOLS = {"AAA": 0.30, "BBB": 0.25, "CCC": 0.20, "DDD": 0.35}


@pytest.fixture(scope="module")
def sampled() -> tuple[dict[str, list[float]], list[Tick], MarketConfig]:
    config = MarketConfig.model_validate(
        {
            "kind": "market",
            "name": "stats",
            "seed": 7,
            "time_scale": 600,
            "start": "2025-01-06T09:30:00-05:00",
            "calendar": {"sessions": {"pre": None, "post": None}},
            "factors": {"market": {"volatility": 0.16}, "tech": {"volatility": 0.12}},
            "correlations": [["CCC", "DDD", 0.6]],
            "defaults": {"trades_per_sec": 2, "quotes_per_trade": 0},
            "symbols": [
                {"symbol": "AAA", "price": 100, "volatility": 0.30, "loadings": {"market": 1.2, "tech": 1.0}},
                {"symbol": "BBB", "price": 50, "volatility": 0.25, "loadings": {"market": 0.9, "tech": 1.2}},
                {"symbol": "CCC", "price": 80, "volatility": 0.20},
                {"symbol": "DDD", "price": 120, "volatility": 0.35},
            ],
        }
    )
    ticks: list[Tick] = []
    returns = _five_minute_returns(config, list(STATS_VOLS), STATS_DAYS, ticks)
    return returns, ticks, config


class TestStatistics:
    """Over 60 simulated days at a fixed seed, sampled every 5 minutes of the regular session."""

    def test_realised_volatility_matches_the_config(self, sampled: tuple[dict[str, list[float]], Any, Any]) -> None:
        """Annualised 5-minute realised volatility is within 10 % of each configured volatility."""
        returns, _, _ = sampled
        for name, target in STATS_VOLS.items():
            realised = math.sqrt(statistics.fmean(r * r for r in returns[name]) * 78 * 252)
            assert realised == pytest.approx(target, rel=0.10), name

    def test_factor_correlation_matches_the_implied_one(self, sampled: tuple[dict[str, list[float]], Any, Any]) -> None:
        """Two stocks loading on shared factors correlate as sum(b_i b_j s_k^2) / (s_i s_j), within 0.1."""
        returns, _, _ = sampled
        implied = (1.2 * 0.9 * 0.16**2 + 1.0 * 1.2 * 0.12**2) / (0.30 * 0.25)
        assert statistics.correlation(returns["AAA"], returns["BBB"]) == pytest.approx(implied, abs=0.1)
        assert statistics.correlation(returns["AAA"], returns["CCC"]) == pytest.approx(0.0, abs=0.1)

    def test_pairwise_correlation_matches_the_config(self, sampled: tuple[dict[str, list[float]], Any, Any]) -> None:
        """A pair given in `correlations` correlates as configured, within 0.1."""
        returns, _, _ = sampled
        assert statistics.correlation(returns["CCC"], returns["DDD"]) == pytest.approx(0.6, abs=0.1)

    def test_trades_arrive_at_the_configured_rate(self, sampled: tuple[Any, list[Tick], MarketConfig]) -> None:
        """The mean wall-clock gap between trades in the regular session is within 5 % of 1/trades_per_sec."""
        _, ticks, config = sampled
        gaps: list[float] = []
        last: int | None = None
        for tick in ticks:
            if isinstance(tick, Status) and tick.symbol == "BBB":
                last = None  # gaps across the night are not inter-arrival times
            elif isinstance(tick, Trade) and tick.symbol == "BBB":
                if last is not None:
                    gaps.append((tick.ts - last) / 1000 / config.time_scale)
                last = tick.ts
        assert len(gaps) > 4000
        assert statistics.fmean(gaps) == pytest.approx(1 / 2, rel=0.05)

    def test_activity_is_u_shaped(self, sampled: tuple[Any, list[Tick], Any]) -> None:
        """More trades in the first and last half hour than in a midday half hour."""
        _, ticks, _ = sampled
        counts: dict[str, int] = defaultdict(int)
        for tick in ticks:
            if isinstance(tick, Trade):
                local = datetime.fromtimestamp(tick.ts / 1000, NEW_YORK)
                minute = local.hour * 60 + local.minute
                if minute < 10 * 60:
                    counts["open"] += 1
                elif 12 * 60 + 30 <= minute < 13 * 60:
                    counts["midday"] += 1
                elif minute >= 15 * 60 + 30:
                    counts["close"] += 1
        assert counts["open"] > 2.5 * counts["midday"]
        assert counts["close"] > 2.5 * counts["midday"]

    def test_volatility_regime_keeps_the_average_and_the_leverage_effect(self) -> None:
        """With stochastic volatility, realised volatility stays within 10 %, and falls are followed by bigger moves."""
        config = MarketConfig.model_validate(
            {
                "kind": "market",
                "name": "regime",
                "seed": 2,
                "time_scale": 600,
                "start": "2025-01-06T09:30:00-05:00",
                "calendar": {"sessions": {"pre": None, "post": None}},
                "factors": {"market": {"volatility": 0.16}},
                "volatility_regime": {"half_life_s": 1800, "vol_of_vol": 0.4, "leverage": -0.7},
                "defaults": {"trades_per_sec": 0.2, "quotes_per_trade": 0},
                "symbols": [{"symbol": "AAA", "price": 100, "volatility": 0.30, "loadings": {"market": 1.0}}],
            }
        )
        returns = _five_minute_returns(config, ["AAA"], STATS_DAYS)["AAA"]
        realised = math.sqrt(statistics.fmean(r * r for r in returns) * 78 * 252)
        assert realised == pytest.approx(0.30, rel=0.10)
        ahead = [sum(r * r for r in returns[i + 1 : i + 7]) for i in range(len(returns) - 7)]
        assert statistics.correlation(returns[: len(ahead)], ahead) < -0.05


def _five_minute_returns(
    config: MarketConfig, names: list[str], days: int, ticks: list[Tick] | None = None
) -> dict[str, list[float]]:
    """Log returns of the model price over each 5 minutes of `days` regular sessions (no pre/post)."""
    sim = config.build().simulation()
    out: list[Tick] = [] if ticks is None else ticks
    sim.start(out.append)
    returns: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(days):
        assert _status(out, names[0]) == "open"
        open_ = sim.now
        before = {name: sim.price(name) for name in names}
        for k in range(1, 79):  # 78 five-minute intervals in 6.5 hours
            sim.advance(open_ + 300 * k, out.append)
            now = {name: sim.price(name) for name in names}
            for name in names:
                returns[name].append(math.log(now[name] / before[name]))
            before = now
        while _status(out, names[0]) != "open" or sim.now == open_:  # on to the next open
            sim.advance(sim.next_time() + 1e-6, out.append)
    return returns


def _status(ticks: list[Tick], symbol: str) -> str:
    for tick in reversed(ticks):
        if isinstance(tick, Status) and tick.symbol == symbol:
            return tick.status
    return ""


class TestDeterminism:
    def test_same_seed_same_bytes(self) -> None:
        """The same config and seed give the same tick sequence, byte for byte."""
        config = market(**RICH)
        assert fingerprint(generate(config, 1800)) == fingerprint(generate(config, 1800))

    def test_different_seed_different_sequence(self) -> None:
        """Another seed gives another sequence."""
        assert fingerprint(generate(market(**RICH), 600)) != fingerprint(generate(market(**{**RICH, "seed": 12}), 600))

    def test_golden_sequence(self) -> None:
        """A pinned run is reproduced exactly (if the model changes on purpose, update the hash)."""
        ticks = generate(market(**RICH), 1800)
        assert len(ticks) == GOLDEN_COUNT
        assert fingerprint(ticks) == GOLDEN_HASH

    def test_adding_a_symbol_leaves_an_independent_one_alone(self) -> None:
        """A symbol without factors keeps its exact ticks when another symbol joins the feed."""
        alone = market(symbols=[{"symbol": "KO", "price": 62.1}])
        joined = market(symbols=[{"symbol": "KO", "price": 62.1}, {"symbol": "PEP", "price": 171.4}])
        ko = [t for t in generate(joined, 7200) if t.symbol == "KO"]
        assert generate(alone, 7200) == ko

    def test_seed_is_random_logged_and_exposed_when_absent(self, caplog: pytest.LogCaptureFixture) -> None:
        """Without a seed the feed picks one, logs it, and the same seed repeats the run."""
        config = market(seed=None)
        with caplog.at_level(logging.INFO, logger="feeds.market"):
            feed = config.build()
        assert str(feed.seed) in caplog.text
        repeat = market(seed=feed.seed)
        assert fingerprint(generate(repeat, 600)) == fingerprint(_ticks(feed.simulation(), 600))


def _ticks(sim: Simulation, seconds: float) -> list[Tick]:
    out: list[Tick] = []
    sim.start(out.append)
    sim.advance(sim.now + seconds, out.append)
    return out


GOLDEN_COUNT = 4710
GOLDEN_HASH = "943db06549b0b39aadfa7c3dabe11c6921c00a791cd4f3b84d30b11cacbe5cbe"


class TestSessions:
    def test_default_start_is_trading_whatever_the_hour(self) -> None:
        """Started at 23:00 on a Saturday, the default market is open and trading within seconds."""
        saturday_night = datetime(2025, 3, 8, 23, 0, tzinfo=NEW_YORK).timestamp()
        clock = VirtualClock(saturday_night)
        config = market(start="open")
        ticks = asyncio.run(_run(MarketFeed(config, clock=clock), clock, wall_seconds=3))
        assert isinstance(ticks[0], Status) and ticks[0].status == "open"
        assert any(isinstance(t, Trade) for t in ticks)
        opened = datetime.fromtimestamp(ticks[0].ts / 1000, NEW_YORK)
        assert (opened.date(), opened.hour, opened.minute) == (date(2025, 3, 7), 9, 30)  # Friday's open

    def test_run_emits_every_initial_status_first(self) -> None:
        """run() starts with one Status per symbol, before any print."""
        clock = VirtualClock()
        config = market(symbols=[{"symbol": "AAPL", "price": 190}, {"symbol": "MSFT", "price": 410}])
        ticks = asyncio.run(_run(MarketFeed(config, clock=clock), clock, wall_seconds=1))
        assert [(t.symbol, type(t)) for t in ticks[:2]] == [("AAPL", Status), ("MSFT", Status)]

    def test_run_paces_market_time_by_time_scale(self) -> None:
        """After 30 wall seconds at time_scale 60, half an hour of market has passed, in batched sleeps."""
        clock = VirtualClock()
        config = market(defaults={"trades_per_sec": 20})
        ticks = asyncio.run(_run(MarketFeed(config, clock=clock), clock, wall_seconds=30))
        span_s = (ticks[-1].ts - ticks[0].ts) / 1000
        assert 1790 <= span_s <= 1800
        assert clock.sleeps <= 30 / MIN_SLEEP_S + 5

    def test_sessions_roll_over_by_themselves(self) -> None:
        """From the open: post, closed, then a new day's pre-market and open, with the night taking closed_wall_s."""
        config = market(closed_wall_s=5)
        sim = config.build().simulation()
        ticks: list[Tick] = []
        sim.start(ticks.append)
        sim.advance(sim.now + 86400 + 1, ticks.append)
        statuses = [t.status for t in ticks if isinstance(t, Status)]
        assert statuses == ["open", "post", "closed", "pre", "open"]
        post_end = datetime(2025, 3, 3, 20, 0, tzinfo=NEW_YORK).timestamp()
        pre_start = datetime(2025, 3, 4, 4, 0, tzinfo=NEW_YORK).timestamp()
        assert sim.wall_seconds(post_end, pre_start) == pytest.approx(5.0)
        assert sim.wall_seconds(pre_start, pre_start + 600) == pytest.approx(10.0)  # 10 min at 60x

    def test_a_closed_market_only_when_asked(self) -> None:
        """start: now at night gives a closed market that opens at the next pre-market session."""
        night = datetime(2025, 3, 4, 2, 0, tzinfo=NEW_YORK).timestamp()
        clock = VirtualClock(night)
        sim = MarketFeed(market(start="now"), clock=clock).simulation()
        ticks: list[Tick] = []
        sim.start(ticks.append)
        assert [t.status for t in ticks if isinstance(t, Status)] == ["closed"]
        sim.advance(night + 3 * 3600, ticks.append)
        assert isinstance(ticks[1], NewDay) and isinstance(ticks[2], Status) and ticks[2].status == "pre"

    def test_extended_hours_are_quieter_and_wider(self) -> None:
        """Pre-market has fewer trades per minute and wider spreads than the regular session."""
        ticks = generate(market(start="2025-03-03T04:00:00-05:00", defaults={"trades_per_sec": 10}), 9 * 3600)
        by_status: dict[str, list[Tick]] = defaultdict(list)
        status = ""
        for tick in ticks:
            if isinstance(tick, Status):
                status = tick.status
            else:
                by_status[status].append(tick)
        pre_rate = sum(isinstance(t, Trade) for t in by_status["pre"]) / 5.5
        open_rate = sum(isinstance(t, Trade) for t in by_status["open"]) / 3.5
        assert pre_rate < 0.3 * open_rate

        def spread(ts: list[Tick]) -> float:
            return statistics.fmean(t.ask_ticks - t.bid_ticks for t in ts if isinstance(t, Quote))

        assert spread(by_status["pre"]) > 2 * spread(by_status["open"])


class TestScenarios:
    def test_halt_stops_prints_and_reopens_with_a_jump(self) -> None:
        """A halted symbol prints nothing for the halt's duration, then reopens near the scripted jump."""
        config = market(
            defaults={"trades_per_sec": 10, "volatility": 0.05},
            scenarios=[
                {"at": "10:00", "action": "halt", "symbols": ["AAPL"], "duration_s": 600, "reopen_jump_pct": -4}
            ],
        )
        ticks = generate(config, 3600)
        halt = next(t for t in ticks if isinstance(t, Status) and t.status == "halted")
        reopen = next(t for t in ticks if isinstance(t, Status) and t.ts > halt.ts)
        assert reopen.status == "open" and reopen.ts - halt.ts == 600_000
        assert not [t for t in ticks if isinstance(t, Trade | Quote) and halt.ts <= t.ts < reopen.ts]
        before = [t for t in ticks if isinstance(t, Quote) and t.ts < halt.ts][-1]
        after = next(t for t in ticks if isinstance(t, Quote) and t.ts >= reopen.ts)
        move = (after.bid_ticks + after.ask_ticks) / (before.bid_ticks + before.ask_ticks) - 1
        assert move == pytest.approx(-0.04, abs=0.005)

    def test_daily_scenario_fires_once_a_day_even_from_a_night_start(self) -> None:
        """Started at night, a daily halt fires once on each of the following days, not twice."""
        night = datetime(2025, 3, 4, 2, 0, tzinfo=NEW_YORK).timestamp()
        halt = {"at": "10:00", "action": "halt", "symbols": ["AAPL"], "duration_s": 60}
        sim = MarketFeed(market(start="now", scenarios=[halt]), clock=VirtualClock(night)).simulation()
        ticks: list[Tick] = []
        sim.start(ticks.append)
        sim.advance(night + 2 * 86400, ticks.append)
        halts = [t for t in ticks if isinstance(t, Status) and t.status == "halted"]
        assert [datetime.fromtimestamp(t.ts / 1000, NEW_YORK).strftime("%d %H:%M") for t in halts] == [
            "04 10:00",
            "05 10:00",
        ]

    def test_dated_scenario_fires_once(self) -> None:
        """A scenario at a date-time fires on that day only; a naive date-time is exchange time."""
        halts = [
            {"at": "2025-03-04T10:00:00-05:00", "action": "halt", "symbols": ["AAPL"], "duration_s": 60},
            {"at": "2025-03-05T11:00:00", "action": "halt", "symbols": ["AAPL"], "duration_s": 60},
        ]
        ticks = generate(market(scenarios=halts), 3 * 86400)
        stamps = [t.ts for t in ticks if isinstance(t, Status) and t.status == "halted"]
        assert [datetime.fromtimestamp(ts / 1000, NEW_YORK).strftime("%d %H:%M") for ts in stamps] == [
            "04 10:00",
            "05 11:00",
        ]

    def test_factor_shock_moves_loaded_stocks_by_their_beta(self) -> None:
        """A -2 % market shock over two minutes moves a beta-1.5 stock about -3 % and an unloaded one not at all."""
        config = market(
            factors={"market": {"volatility": 0.01}},
            defaults={"volatility": 0.02, "trades_per_sec": 5},
            scenarios=[{"at": "10:00", "action": "factor_shock", "factor": "market", "return_pct": -2, "over_s": 120}],
            symbols=[
                {"symbol": "HIGH", "price": 100, "loadings": {"market": 1.5}},
                {"symbol": "NONE", "price": 100},
            ],
        )
        sim = config.build().simulation()
        sim.start(lambda tick: None)
        sim.advance(datetime(2025, 3, 3, 9, 59, tzinfo=NEW_YORK).timestamp(), lambda tick: None)
        before = {name: sim.price(name) for name in ("HIGH", "NONE")}
        sim.advance(datetime(2025, 3, 3, 10, 3, tzinfo=NEW_YORK).timestamp(), lambda tick: None)
        assert sim.price("HIGH") / before["HIGH"] - 1 == pytest.approx(0.98**1.5 - 1, abs=0.003)
        assert sim.price("NONE") / before["NONE"] - 1 == pytest.approx(0.0, abs=0.003)

    def test_volatility_scenario_scales_moves(self) -> None:
        """A volatility multiplier of 3 makes 1-minute moves about three times larger while it lasts."""

        def minute_moves(scenarios: list[dict[str, Any]]) -> float:
            config = market(scenarios=scenarios, calendar={"sessions": {"pre": None, "post": None}})
            sim = config.build().simulation()
            sim.start(lambda tick: None)
            start = datetime(2025, 3, 3, 11, 0, tzinfo=NEW_YORK).timestamp()
            sim.advance(start, lambda tick: None)
            moves = []
            last = sim.price("AAPL")
            for k in range(1, 240):
                sim.advance(start + 60 * k, lambda tick: None)
                now = sim.price("AAPL")
                moves.append(math.log(now / last) ** 2)
                last = now
            return math.sqrt(statistics.fmean(moves))

        calm = minute_moves([])
        stormy = minute_moves([{"at": "10:30", "action": "volatility", "multiplier": 3.0, "duration_s": 7 * 3600}])
        assert stormy / calm == pytest.approx(3.0, rel=0.2)


class TestCalendar:
    def test_nyse_holidays_by_rule(self) -> None:
        """The NYSE holiday rules give the exchange's published 2025 and 2026 closures."""
        assert sorted(nyse_holidays(2025)) == [
            date(2025, 1, 1), date(2025, 1, 20), date(2025, 2, 17), date(2025, 4, 18), date(2025, 5, 26),
            date(2025, 6, 19), date(2025, 7, 4), date(2025, 9, 1), date(2025, 11, 27), date(2025, 12, 25),
        ]  # fmt: skip
        assert sorted(nyse_holidays(2026)) == [
            date(2026, 1, 1), date(2026, 1, 19), date(2026, 2, 16), date(2026, 4, 3), date(2026, 5, 25),
            date(2026, 6, 19), date(2026, 7, 3), date(2026, 9, 7), date(2026, 11, 26), date(2026, 12, 25),
        ]  # fmt: skip
        assert date(2021, 12, 31) not in nyse_holidays(2021)  # New Year 2022 fell on a Saturday
        assert easter(2024) == date(2024, 3, 31)

    def test_sessions_follow_local_time_across_daylight_saving(self) -> None:
        """The regular open is 09:30 New York time on both sides of the March change (14:30 then 13:30 UTC)."""
        calendar = CalendarConfig().build()
        before = calendar.session_start(date(2025, 3, 7), "regular")
        after = calendar.session_start(date(2025, 3, 10), "regular")
        assert datetime.fromtimestamp(before, NEW_YORK).hour == datetime.fromtimestamp(after, NEW_YORK).hour == 9
        assert (after - before) % 86400 == 86400 - 3600

    def test_holiday_is_closed_all_day(self) -> None:
        """Good Friday 2025 has no session: Thursday's post-market runs into Monday's pre-market."""
        calendar = CalendarConfig().build()
        thursday_evening = calendar.at(date(2025, 4, 17), 21 * 3600)
        segment = next(calendar.segments_from(thursday_evening))
        assert segment.kind == "closed"
        assert calendar.local_date(segment.end) == date(2025, 4, 21)


class TestMicrostructure:
    def test_round_lot_tiers(self) -> None:
        """Round lots follow the SEC price tiers: 100, 40, 10, then 1 share."""
        assert [round_lot(p) for p in (50, 250, 250.01, 1000, 5000, 10_001)] == [100, 100, 40, 40, 10, 1]

    def test_trade_sizes_mix_odd_and_round_lots(self, rich_run: tuple[MarketConfig, list[Tick]]) -> None:
        """Trades mix odd lots with round-lot multiples; a $700,000 stock trades single shares."""
        _, ticks = rich_run
        aapl = [t.size for t in ticks if isinstance(t, Trade) and t.symbol == "AAPL"]
        odd = sum(size % 100 != 0 for size in aapl) / len(aapl)
        assert 0.2 < odd < 0.5
        assert all(size % 100 == 0 for size in aapl if size >= 100)
        brka = [t.size for t in ticks if isinstance(t, Trade) and t.symbol == "BRKA"]
        assert brka and max(brka) < 20

    def test_bid_ask_bounce(self) -> None:
        """At real-time pace, successive trade-price changes are negatively autocorrelated (Roll's bounce)."""
        ticks = generate(market(time_scale=1, defaults={"trades_per_sec": 5}), 300)
        prices = [t.price_ticks for t in ticks if isinstance(t, Trade)]
        changes = [b - a for a, b in itertools.pairwise(prices)]
        assert statistics.correlation(changes[:-1], changes[1:]) < -0.2


async def _run(feed: MarketFeed, clock: VirtualClock, *, wall_seconds: float) -> list[Tick]:
    """Run the feed on the virtual clock until `wall_seconds` of (virtual) wall time have passed."""
    ticks: list[Tick] = []

    def emit(tick: Tick) -> None:
        ticks.append(tick)

    task = asyncio.create_task(feed.run(emit))
    while clock.monotonic() < wall_seconds and not task.done():
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return ticks
