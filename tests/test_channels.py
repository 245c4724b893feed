"""In memory: the status and bars channels, bar aggregation, and per-client throttling."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from feeds.base import NewDay, Quote, Status, Trade
from service.bars import BarBuilder, Bars
from service.events import QUOTES, STATUS, TRADES
from tests.test_core import Client, World, data_events, of_type


def test_bar_builder_publishes_forming_bars_sparingly_and_finals_once() -> None:
    """A forming bar is published at most every tenth of its interval; the final once, after its end."""
    builder = BarBuilder(1000)
    first = builder.add(10_000, 10.0, 100)
    assert first is not None
    assert (first["start_ts"], first["end_ts"], first["final"]) == (10_000, 11_000, False)
    assert builder.add(10_050, 12.0, 50) is None  # 50 ms after the last update: held
    update = builder.add(10_150, 9.0, 25)
    assert update is not None
    assert (update["open"], update["high"], update["low"], update["close"]) == (10.0, 12.0, 9.0, 9.0)
    assert (update["volume"], update["trades"]) == (175, 3)
    assert builder.close_if_due(10_999) is None
    final = builder.close_if_due(11_000)
    assert final == {**update, "final": True}
    assert builder.close_if_due(12_000) is None  # nothing forming: no empty bars


@pytest.mark.parametrize("seed", range(5))
def test_bars_publish_exactly_what_one_builder_per_interval_would(seed: int) -> None:
    """Bars sums most trades once for all intervals; what it publishes must not change."""
    rng = random.Random(seed)
    intervals = {"bars.1s": 1_000, "bars.1m": 60_000}
    bars = Bars(intervals)
    reference = {ch: BarBuilder(interval) for ch, interval in intervals.items()}
    got: list[tuple[str, dict[str, Any]]] = []
    expected: list[tuple[str, dict[str, Any]]] = []
    ts = 1_000_000
    for _ in range(5_000):
        ts += rng.choice([0, 1, 3, 20, 90, 400, 2_500, 70_000])
        # Any tick may close a bar; only trades fold in.
        if ts >= bars.due:
            got += bars.close_due(ts)
        expected += [(ch, bar) for ch, b in reference.items() if (bar := b.close_if_due(ts)) is not None]
        if rng.random() < 0.8:
            price, size = round(rng.uniform(9, 11), 2), rng.randint(1, 500)
            got += bars.add(ts, price, size) or []
            expected += [(ch, bar) for ch, b in reference.items() if (bar := b.add(ts, price, size)) is not None]
    assert len(expected) > 100
    assert got == expected


def _bars_from(events: list[Any], ch: str) -> dict[int, dict[str, Any]]:
    return {e.fields["start_ts"]: e.fields for e in events if e.ch == ch and e.fields["final"]}


def test_final_bars_aggregate_exactly_the_trades_in_their_interval() -> None:
    """Every final 1 s bar is the OHLCV of the trades whose ts falls in [start_ts, end_ts)."""
    world = World()
    world.step(400)
    events = world.events(("trades", "bars.1s"))
    trades = [e for e in events if e.key == (TRADES, "AAPL")]
    finals = _bars_from([e for e in events if e.sym == "AAPL"], "bars.1s")
    assert len(finals) >= 50
    for start, bar in finals.items():
        inside = [t.fields for t in trades if start <= t.ts < start + 1000]
        assert bar["open"] == inside[0]["price"]
        assert bar["close"] == inside[-1]["price"]
        assert bar["high"] == max(t["price"] for t in inside)
        assert bar["low"] == min(t["price"] for t in inside)
        assert bar["volume"] == sum(t["size"] for t in inside)
        assert bar["trades"] == len(inside)


def test_bar_history_holds_finals_and_the_forming_bar() -> None:
    """The hub's bar history is the final bars, oldest first, then the forming one."""
    world = World()
    world.step(300)
    history = world.hub.bar_history_of("bars.1s", "MSFT", 1000)
    assert [b["final"] for b in history[:-1]] == [True] * (len(history) - 1)
    starts = [b["start_ts"] for b in history]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)
    assert world.hub.bar_history_of("bars.1s", "MSFT", 5) == history[-5:]


def test_status_and_new_day_reach_the_status_channel_and_snapshots() -> None:
    """Status ticks become status events; a new day restarts day stats with the new previous close."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["status", "quotes"], "symbols": ["AAPL"]})
    client.frames()
    world.sequencer.on_tick(Status("AAPL", world.clock.ms(), "halted", "news pending"))
    world.sequencer.on_tick(Trade("AAPL", world.clock.ms(), 19000, 100))
    world.sequencer.on_tick(NewDay("AAPL", world.clock.ms(), 19000))
    events = [e for e in data_events(client.frames()) if e["ch"] == STATUS]
    assert [(e["status"], e["reason"]) for e in events] == [("halted", "news pending"), ("halted", "NEW_DAY")]
    assert events[1]["prev_close"] == 190.0
    snapshot = world.hub.streams[(QUOTES, "AAPL")].snapshot_body(0)["data"]
    assert snapshot["status"] == "halted"
    assert (snapshot["open"], snapshot["volume"], snapshot["prev_close"]) == (None, 0, 190.0)


def test_unknown_status_is_dropped() -> None:
    """A status outside pre/open/post/closed/halted never reaches the wire."""
    world = World()
    world.sequencer.on_tick(Status("AAPL", 1, "lunch"))
    assert world.events((STATUS,)) == []


def _quote(world: World, bid: int) -> None:
    world.sequencer.on_tick(Quote("AAPL", world.clock.ms(), bid, 100, bid + 1, 100))


def test_throttle_sends_at_most_one_state_event_per_interval_the_newest() -> None:
    """throttle_ms holds quotes: the first goes out, later ones wait, only the newest is sent, with prev_seq."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes", "trades"], "symbols": ["AAPL"], "throttle_ms": 500})
    (snapshot_seq,) = [f["seq"] for f in of_type(client.frames(), "snapshot") if f["ch"] == QUOTES]
    session = client.session
    _quote(world, 18000)
    for bid in range(18001, 18006):
        world.clock.advance(0.05)
        _quote(world, bid)
    world.sequencer.on_tick(Trade("AAPL", world.clock.ms(), 18003, 10))
    sent = data_events(client.frames())
    assert [(e["ch"], e["seq"]) for e in sent] == [(QUOTES, snapshot_seq + 1), (TRADES, 1)]  # trades never wait
    assert session.flush_throttled() is not None  # the held quote is not due yet
    assert client.frames() == []
    world.clock.advance(0.3)
    assert session.flush_throttled() is None
    (held,) = data_events(client.frames())
    assert held["seq"] == snapshot_seq + 6
    assert held["prev_seq"] == snapshot_seq + 1
    assert held["bid"] == 180.05


def test_throttle_is_per_subscribe_request_and_ends_with_unsubscribe() -> None:
    """Streams subscribed without throttle_ms are not throttled; unsubscribing drops held events."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["AAPL"], "throttle_ms": 1000})
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["MSFT"]})
    client.frames()
    for _ in range(3):
        _quote(world, 18000)
        world.sequencer.on_tick(Quote("MSFT", world.clock.ms(), 41000, 100, 41001, 100))
    sent = data_events(client.frames())
    assert [e["sym"] for e in sent].count("MSFT") == 3
    assert [e["sym"] for e in sent].count("AAPL") == 1
    client.send({"op": "unsubscribe", "symbols": ["AAPL"]})
    world.clock.advance(2)
    client.session.flush_throttled()
    assert [e for e in data_events(client.frames()) if e["sym"] == "AAPL"] == []


def test_throttle_ms_is_validated() -> None:
    """throttle_ms must be an integer from 0 to 60000."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "symbols": ["AAPL"], "throttle_ms": 60_001})
    (error,) = client.frames()
    assert error["code"] == "BAD_REQUEST"
    assert "throttle_ms" in error["message"]
    assert json.dumps(error)
