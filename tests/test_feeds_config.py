"""Validation of the `market` and `replay` feed configs: one test per rule, each naming the field."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from feeds.base import Feed, FeedConfig, Tick
from feeds.market_config import MarketConfig
from feeds.replay import ReplayConfig
from feeds.synthetic import MAX_LAG_S, SyntheticConfig

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "feeds/data/sample-minute-aggs.csv.gz"


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def errors(model: type[BaseModel], data: dict[str, Any], **context: Any) -> dict[str, str]:
    """Field path -> message of every error the model reports for `data`."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, context=context or None)
    return {dotted(e["loc"]): e["msg"].removeprefix("Value error, ") for e in caught.value.errors()}


def market(**overrides: Any) -> dict[str, Any]:
    return {"kind": "market", "name": "sim", "symbols": [{"symbol": "AAPL", "price": 190.0}], **overrides}


def replay(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "replay",
        "name": "rp",
        "path": SAMPLE,
        "format": "polygon_minute_aggs",
        "symbols": ["ACME"],
        **overrides,
    }


class TestUnknownKeys:
    def test_symbol_key_typo_suggests_the_closest(self) -> None:
        """A misspelt symbol key is rejected at its path with the key it probably meant."""
        data = market(symbols=[{"symbol": "AAPL", "price": 190.0, "volatilty": 0.3}])
        assert errors(MarketConfig, data) == {"symbols[0].volatilty": "unknown key; did you mean 'volatility'?"}

    def test_feed_key_typo_suggests_the_closest(self) -> None:
        """A misspelt feed-level key is rejected with a suggestion."""
        assert errors(MarketConfig, market(time_scal=60)) == {"time_scal": "unknown key; did you mean 'time_scale'?"}

    def test_nested_key_without_a_near_match_lists_the_valid_ones(self) -> None:
        """Deep inside the calendar, an unknown key with no near match lists the keys that exist."""
        data = market(calendar={"sessions": {"pre": {"start": "04:00", "end": "09:30", "zzz": 1}}})
        message = errors(MarketConfig, data)["calendar.sessions.pre.zzz"]
        assert message == "unknown key; expected one of activity, end, spread_mult, start, volatility_mult"

    def test_every_error_is_reported_at_once(self) -> None:
        """Unknown keys come with hints alongside the other errors of the same config, each at its path."""
        data = market(
            tim_scale=1,
            calendar={"sessions": {"pre": {"start": "04:00", "end": "10:00"}}},
            symbols=[{"symbol": "AAPL", "volatilty": 0.2, "price": -1}],
        )
        assert errors(MarketConfig, data) == {
            "tim_scale": "unknown key; did you mean 'time_scale'?",
            "calendar.sessions.regular.start": "regular must start at or after pre ends (10:00)",
            "symbols[0].price": "Input should be greater than 0",
            "symbols[0].volatilty": "unknown key; did you mean 'volatility'?",
        }

    def test_replay_key_typo(self) -> None:
        """The replay kind suggests keys too."""
        assert errors(ReplayConfig, replay(speeed=2)) == {"speeed": "unknown key; did you mean 'speed'?"}


class TestImpossibleValues:
    @pytest.mark.parametrize(
        ("path", "override", "fragment"),
        [
            ("symbols[0].price", {"symbols": [{"symbol": "AAPL", "price": 0}]}, "greater than 0"),
            ("symbols[0].volatility", {"symbols": [{"symbol": "AAPL", "price": 1, "volatility": 9}]}, "less than"),
            ("symbols[0].symbol", {"symbols": [{"symbol": "no way", "price": 1}]}, "should match pattern"),
            ("symbols[0].tick_size", {"symbols": [{"symbol": "A", "price": 1, "tick_size": 0}]}, "positive number"),
            ("defaults.trades_per_sec", {"defaults": {"trades_per_sec": 0}}, "greater than 0"),
            ("microstructure.buy_prob", {"microstructure": {"buy_prob": 1.5}}, "less than or equal to 1"),
            ("time_scale", {"time_scale": 0}, "greater than 0"),
            ("seed", {"seed": -1}, "greater than or equal to 0"),
            ("calendar.open_close_mult", {"calendar": {"open_close_mult": 3}}, "less than 3"),
            ("calendar.timezone", {"calendar": {"timezone": "Mars/Olympus"}}, "unknown time zone 'Mars/Olympus'"),
            ("calendar.sessions.regular.start", {"calendar": {"sessions": {"regular": {"start": "9h30"}}}}, "'09:30'"),
            ("volatility_regime.leverage", {"volatility_regime": {"leverage": -2}}, "greater than or equal to -1"),
            ("correlations[0][2]", {"correlations": [["AAPL", "MSFT", 1.0]]}, "less than 1"),
        ],
    )
    def test_value_out_of_range(self, path: str, override: dict[str, Any], fragment: str) -> None:
        """An impossible value is rejected at its own field path, saying what was expected."""
        found = errors(MarketConfig, market(**override))
        assert path in found, found
        assert fragment in found[path]

    def test_sessions_must_not_overlap(self) -> None:
        """A regular session starting before the pre-market ends is rejected at its start."""
        data = market(calendar={"sessions": {"pre": {"start": "04:00", "end": "10:00"}}})
        assert errors(MarketConfig, data) == {
            "calendar.sessions.regular.start": "regular must start at or after pre ends (10:00)"
        }

    def test_session_must_end_after_it_starts(self) -> None:
        """A session that ends before it starts is rejected at its end."""
        data = market(calendar={"sessions": {"post": {"start": "16:00", "end": "15:00"}}})
        assert "must end after it starts" in errors(MarketConfig, data)["calendar.sessions.post.end"]

    def test_too_many_events_for_the_bus(self) -> None:
        """Rates adding up beyond max_events_per_sec are rejected with the total."""
        data = market(max_events_per_sec=100, defaults={"trades_per_sec": 50})
        assert "about 200 events per second" in errors(MarketConfig, data)["symbols"]


class TestFactorsAndCorrelations:
    SYMBOLS: ClassVar[list[dict[str, Any]]] = [
        {"symbol": "AAA", "price": 10.0, "volatility": 0.2},
        {"symbol": "BBB", "price": 20.0, "volatility": 0.2},
        {"symbol": "CCC", "price": 30.0, "volatility": 0.2},
    ]

    def test_correlations_not_positive_definite_are_rejected(self) -> None:
        """Pairs that no set of returns can have (A~B and A~C strongly, B~C opposite) are rejected."""
        pairs = [["AAA", "BBB", 0.9], ["AAA", "CCC", 0.9], ["BBB", "CCC", -0.9]]
        message = errors(MarketConfig, market(symbols=self.SYMBOLS, correlations=pairs))["correlations"]
        assert "not positive definite" in message and "CCC's correlations with AAA, BBB" in message

    def test_consistent_correlations_pass(self) -> None:
        """The same pairs with a consistent third correlation are accepted."""
        pairs = [["AAA", "BBB", 0.9], ["AAA", "CCC", 0.9], ["BBB", "CCC", 0.85]]
        assert MarketConfig.model_validate(market(symbols=self.SYMBOLS, correlations=pairs)).in_pairs() == [
            "AAA",
            "BBB",
            "CCC",
        ]

    def test_pair_with_unknown_symbol(self) -> None:
        """A pair naming a symbol the feed lacks is rejected at that element."""
        found = errors(MarketConfig, market(symbols=self.SYMBOLS, correlations=[["AAA", "ZZZ", 0.5]]))
        assert found == {"correlations[0][1]": "ZZZ is not a symbol of this feed"}

    def test_duplicate_pair_in_either_order(self) -> None:
        """B-A after A-B is a duplicate, not a silent override."""
        pairs = [["AAA", "BBB", 0.5], ["BBB", "AAA", 0.4]]
        found = errors(MarketConfig, market(symbols=self.SYMBOLS, correlations=pairs))
        assert found == {"correlations[1]": "the pair BBB-AAA is already given by correlations[0]"}

    def test_unknown_factor_in_loadings(self) -> None:
        """A loading on a factor that is not defined is rejected at that loading."""
        data = market(
            factors={"market": {"volatility": 0.15}},
            symbols=[{"symbol": "AAA", "price": 10.0, "loadings": {"market": 1.0, "tech": 0.5}}],
        )
        assert errors(MarketConfig, data) == {
            "symbols[0].loadings.tech": "unknown factor 'tech' (the feed's factors: market)"
        }

    def test_factors_cannot_exceed_total_volatility(self) -> None:
        """Loadings implying more variance than the symbol's volatility are rejected with the implied figure."""
        data = market(
            factors={"market": {"volatility": 0.2}},
            symbols=[{"symbol": "AAA", "price": 10.0, "volatility": 0.1, "loadings": {"market": 1.0}}],
        )
        message = errors(MarketConfig, data)["symbols[0].loadings"]
        assert "the factors alone give AAA a volatility of 0.2000, above its volatility 0.1" in message

    def test_loadings_and_pairs_do_not_mix(self) -> None:
        """A symbol in a pair cannot also have its own loadings."""
        data = market(
            factors={"market": {"volatility": 0.1}},
            symbols=[{"symbol": "AAA", "price": 10.0, "loadings": {"market": 1.0}}, {"symbol": "BBB", "price": 5.0}],
            correlations=[["AAA", "BBB", 0.5]],
        )
        assert "loadings or pairwise correlations, not both" in errors(MarketConfig, data)["symbols[0].loadings"]

    def test_duplicate_symbol(self) -> None:
        """A symbol listed twice in one feed is rejected at the second."""
        data = market(symbols=[{"symbol": "AAA", "price": 1.0}, {"symbol": "aaa", "price": 2.0}])
        assert errors(MarketConfig, data) == {"symbols[1].symbol": "symbol AAA is listed twice in this feed"}

    def test_leverage_needs_its_factor(self) -> None:
        """A volatility regime with leverage needs the factor it correlates with."""
        found = errors(MarketConfig, market(volatility_regime={"leverage": -0.5}))
        assert "unknown factor 'market'" in found["volatility_regime.factor"]


class TestScenarios:
    def test_scenario_outside_sessions(self) -> None:
        """A scenario at 02:00 can never fire and is rejected, naming the sessions."""
        data = market(scenarios=[{"at": "02:00", "action": "jump", "symbols": ["AAPL"], "return_pct": 3}])
        found = errors(MarketConfig, data)
        assert found == {"scenarios[0].at": "02:00 is outside every session (04:00-09:30, 09:30-16:00, 16:00-20:00)"}

    def test_scenario_keys_fit_the_action(self) -> None:
        """A halt without a duration, and with a key it does not use, is rejected key by key."""
        data = market(scenarios=[{"at": "11:00", "action": "halt", "symbols": ["AAPL"], "multiplier": 2}])
        found = errors(MarketConfig, data)
        assert found["scenarios[0].duration_s"] == "required by action 'halt'"
        assert found["scenarios[0].multiplier"].startswith("not used by action 'halt'")

    def test_scenario_symbol_and_factor_must_exist(self) -> None:
        """Scenarios name existing symbols and factors."""
        data = market(
            scenarios=[
                {"at": "11:00", "action": "jump", "symbols": ["MSFT"], "return_pct": 2},
                {"at": "11:00", "action": "factor_shock", "factor": "energy", "return_pct": -1},
            ]
        )
        found = errors(MarketConfig, data)
        assert found["scenarios[0].symbols[0]"] == "MSFT is not a symbol of this feed"
        assert found["scenarios[1].factor"].startswith("unknown factor 'energy'")

    def test_overlapping_halts(self) -> None:
        """Two halts of one symbol that overlap are rejected at the second."""
        halt = {"action": "halt", "symbols": ["AAPL"], "duration_s": 600}
        found = errors(MarketConfig, market(scenarios=[{"at": "11:00", **halt}, {"at": "11:05", **halt}]))
        assert found == {"scenarios[1].at": "AAPL's halt overlaps the one in scenarios[0]"}

    def test_dated_scenario_on_a_holiday(self) -> None:
        """A dated scenario on Good Friday is rejected: it is not a trading day."""
        at = "2025-04-18T11:00:00-04:00"
        data = market(scenarios=[{"at": at, "action": "jump", "symbols": ["AAPL"], "return_pct": 1}])
        assert errors(MarketConfig, data) == {"scenarios[0].at": "2025-04-18 is not a trading day"}


class TestReplayConfig:
    def test_missing_file(self) -> None:
        """A path that does not exist is rejected at `path`."""
        assert errors(ReplayConfig, replay(path="nope/missing.csv"))["path"].startswith(
            "no such file: nope/missing.csv"
        )

    def test_relative_path_resolves_against_the_config_directory(self) -> None:
        """With a base_dir in the validation context, a relative path is taken from there."""
        config = ReplayConfig.model_validate(replay(), context={"base_dir": ROOT})
        assert Path(config.path) == ROOT / SAMPLE

    def test_header_must_fit_the_format(self) -> None:
        """A minute-bar file declared as Yahoo data is rejected, naming the missing columns and the fitting format."""
        message = errors(ReplayConfig, replay(path=str(ROOT / SAMPLE), format="yahoo_daily"))["format"]
        assert "lacks column(s) date, adj close required by format 'yahoo_daily'" in message
        assert "the header fits format 'polygon_minute_aggs'" in message

    def test_daily_file_holds_one_symbol(self, tmp_path: Path) -> None:
        """A Yahoo daily file has no symbol column, so exactly one symbol must be configured."""
        path = tmp_path / "y.csv"
        path.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")
        found = errors(ReplayConfig, replay(path=str(path), format="yahoo_daily", symbols=["A", "B"]))
        assert "holds one symbol; list exactly one, got 2" in found["symbols"]

    def test_speed_cannot_be_negative(self) -> None:
        """speed is 0 (as fast as possible) or more."""
        assert "greater than or equal to 0" in errors(ReplayConfig, replay(path=str(ROOT / SAMPLE), speed=-1))["speed"]

    def test_symbols_are_published_names(self) -> None:
        """symbol_names() gives the published names, after `source` renames."""
        data = replay(path=str(ROOT / SAMPLE), symbols=[{"symbol": "ACME.R", "source": "ACME"}, "INIT"])
        assert ReplayConfig.model_validate(data).symbol_names() == ["ACME.R", "INIT"]


def test_kinds_follow_the_feed_protocols() -> None:
    """Both kinds are FeedConfigs whose build() gives a Feed publishing exactly symbol_names() (types: mypy)."""
    configs: list[FeedConfig] = [
        MarketConfig.model_validate(
            market(symbols=[{"symbol": "AAPL", "price": 1.0}, {"symbol": "MSFT", "price": 2.0}])
        ),
        ReplayConfig.model_validate(
            replay(symbols=[{"symbol": "ACME.R", "source": "ACME"}]), context={"base_dir": ROOT}
        ),
    ]
    for config in configs:
        feed: Feed = config.build()
        assert feed.name == config.name
        assert [spec.symbol for spec in feed.symbols()] == config.symbol_names()


def default_market_feeds() -> list[dict[str, Any]]:
    """The `feeds:` YAML block under "Default market" in docs/feeds.md."""
    text = (ROOT / "docs" / "feeds.md").read_text()
    section = text.split("## Default market", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "docs/feeds.md has a YAML block under 'Default market'"
    feeds: list[dict[str, Any]] = yaml.safe_load(block.group(1))["feeds"]
    return feeds


def test_documented_default_market_is_valid() -> None:
    """The proposed default feeds validate, and make a realistic market: ~20 tickers, a pair, a sub-$1 stock."""
    feeds = default_market_feeds()
    models: list[MarketConfig | ReplayConfig] = []
    for feed in feeds:
        model = MarketConfig if feed["kind"] == "market" else ReplayConfig
        models.append(model.model_validate(feed, context={"base_dir": ROOT}))
    sims = [m for m in models if isinstance(m, MarketConfig)]
    assert len([m for m in models if isinstance(m, ReplayConfig)]) == 1
    symbols = [s for m in sims for s in m.symbols]
    assert 18 <= len(symbols) <= 25
    assert any(s.price < 1 for s in symbols)
    assert any(m.correlations for m in sims)
    assert all(m.start == "open" and m.time_scale >= 10 for m in sims)
    names = [n for m in models for n in m.symbol_names()]
    assert len(names) == len(set(names)), "no symbol is published twice"


async def test_synthetic_feed_owes_a_slow_receiver_at_most_max_lag() -> None:
    """A receiver slower than the rate gets bursts of two intervals' worth at most, and at most MAX_LAG_S is owed."""
    config = SyntheticConfig(kind="synthetic", name="load", symbols=10, rate=100_000, burst_ms=5)
    sizes: list[int] = []
    turns = 0

    class SlowSink:
        def __call__(self, tick: Tick) -> None:
            pass

        def burst(self, ticks: Iterable[Tick]) -> None:
            sizes.append(sum(1 for _ in ticks))  # the feed makes them as they are taken
            time.sleep(0.02)  # 2,000 events' worth of time per burst of 1,000

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    task = asyncio.create_task(config.build().run(SlowSink()))
    async with asyncio.timeout(30):  # a feed that fails stops adding sizes: fail, do not hang
        while len(sizes) < 40:
            assert not task.done(), task
            await asyncio.sleep(0.01)
    task.cancel()
    counter.cancel()
    await asyncio.gather(task, counter, return_exceptions=True)
    assert MAX_LAG_S == 0.05
    assert max(sizes) == 1_000  # never more than two 5 ms intervals' worth at once
    # Behind, it owes at most 50 ms: 5,000 events, five full bursts in a row, then a short
    # one with the remainder; unbounded, every burst would be a full one.
    runs, run = [], 0
    for size in sizes:
        run = run + 1 if size == 1_000 else 0
        runs.append(run)
    assert max(runs) == 5
    assert turns >= len(sizes) - 1  # the loop turned between bursts: other work went on
