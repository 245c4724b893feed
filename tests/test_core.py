"""Sequencer, memory bus, hub and session wired together for real, driven by hand with a fake clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest

from feeds.base import Quote, SymbolSpec, Tick, Trade, emit_burst
from feeds.random_walk import RandomWalkConfig, RandomWalkFeed
from service.bus import ReplayRefused
from service.bus.memory import SEGMENT, MemoryBus
from service.config import StreamSettings
from service.events import CHANNEL_KINDS, QUOTES, TRADES, BusMessage, Chunk, Event, StreamKey, StreamReset
from service.hub import WAKE_GROUPS, Hub
from service.protocol import CloseCode
from service.sequencer import Sequencer
from service.session import Session

SYMBOLS: list[dict[str, Any]] = [
    {"symbol": "AAPL", "price": 189.5, "volatility": 0.25},
    {"symbol": "MSFT", "price": 415.2, "volatility": 0.22},
    {"symbol": "SIRI", "price": 0.8125, "volatility": 0.7},
    {"symbol": "GRID", "price": 101.3, "tick_size": "0.05", "spread_ticks": 3, "volatility": 2.0},
]
NAMES = sorted(s["symbol"] for s in SYMBOLS)
STEP_S = 0.25


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_712_345_678.0  # no long digit runs, so float noise stands out

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def ms(self) -> int:
        return int(self.now * 1000)


CHANNEL_KINDS_ALL = tuple(CHANNEL_KINDS)


class World:
    """One process's core: feed -> sequencer -> memory bus -> hub, stepped by hand."""

    def __init__(self, seed: int = 42, window: int = 10_000) -> None:
        self.clock = FakeClock()
        self.bus = MemoryBus(window)
        self.hub = Hub(self.bus, clock=self.clock)  # subscribes first, as in the runtime
        self.published: list[BusMessage] = []
        self.bus.subscribe(self.published.extend)
        self.sequencer = Sequencer(self.bus.publish_many)
        config = RandomWalkConfig(
            kind="random_walk", name="sim", seed=seed, activity=1.0, trade_ratio=0.5, symbols=SYMBOLS
        )
        self.feed = RandomWalkFeed(config, clock=self.clock)
        self.sequencer.register(self.feed.symbols())
        self.walks = self.feed._walks()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(STEP_S)
            self.feed.step(self.walks, self.clock.ms(), self.sequencer.on_tick)

    def events(self, channels: tuple[str, ...] = (TRADES, QUOTES)) -> list[Event]:
        return [m for m in self.published if isinstance(m, Event) and m.ch in channels]

    def seq(self, ch: str, sym: str) -> int:
        return self.hub.streams[(ch, sym)].seq

    def epoch(self, ch: str, sym: str) -> str:
        return self.hub.streams[(ch, sym)].epoch


class Client:
    """A Session with recording callbacks, and a reader that checks G1/G2/G3 on what it gets."""

    def __init__(self, world: World, **settings: Any) -> None:
        self.world = world
        self.wakes = 0
        self.fatal_calls = 0
        self.session = Session(
            world.hub,
            StreamSettings(**settings),
            wake=self._wake,
            on_fatal=self._on_fatal,
            clock=world.clock,
            peer="test",
        )
        self.last: dict[StreamKey, int] = {}  # last seq seen per stream
        self.epochs: dict[StreamKey, str] = {}
        self.received: dict[StreamKey, list[int]] = defaultdict(list)

    def _wake(self) -> None:
        self.wakes += 1

    def _on_fatal(self) -> None:
        self.fatal_calls += 1

    def send(self, message: dict[str, Any] | str) -> None:
        self.session.on_text(message if isinstance(message, str) else json.dumps(message))

    def frames(self) -> list[dict[str, Any]]:
        """Drain the outbox, checking every frame as a careful client would."""
        out = []
        while (frame := self.session.outbox.take_frame()) is not None:
            decoded = json.loads(frame)
            self._check(decoded)
            out.append(decoded)
        return out

    def _check(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "snapshot":
            key = (frame["ch"], frame["sym"])
            self.last[key] = frame["seq"]
            self.epochs[key] = frame["epoch"]
        elif frame["type"] == "reset":
            key = (frame["ch"], frame["sym"])
            self.last.pop(key, None)  # a snapshot of the new epoch must come before any data
            self.epochs[key] = frame["epoch"]
        elif frame["type"] == "ack" and frame["op"] == "subscribe":
            for entry in frame["ok"]:
                if entry.get("recovered"):
                    self.epochs[(entry["ch"], entry["sym"])] = entry["epoch"]
        elif frame["type"] == "data":
            for e in frame["events"]:
                key = (e["ch"], e["sym"])
                assert key in self.last, f"data for {key} before its snapshot or resume position"
                last = self.last[key]
                assert e["seq"] == last + 1 or (e["ch"] == QUOTES and e.get("prev_seq") == last), (
                    f"gap or repeat on {key}: {last} -> {e}"
                )
                self.last[key] = e["seq"]
                self.received[key].append(e["seq"])

    def positions(self) -> list[dict[str, Any]]:
        return [
            {"ch": ch, "sym": sym, "epoch": self.epochs[(ch, sym)], "after_seq": seq}
            for (ch, sym), seq in self.last.items()
        ]


def of_type(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


def data_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for f in of_type(frames, "data") for e in f["events"]]


# --- sequencer and feed --------------------------------------------------------------------


def test_seq_starts_at_one_and_steps_by_one_per_stream() -> None:
    """Every stream's events are numbered 1, 2, 3, ... in its start epoch, with no gap."""
    world = World()
    world.step(60)
    start = {m.key: m.epoch for m in world.published if isinstance(m, StreamReset) and m.reason == "START"}
    assert set(start) == {(ch, sym) for ch in CHANNEL_KINDS for sym in NAMES}
    by_key: dict[StreamKey, list[Event]] = defaultdict(list)
    for e in world.events(tuple(CHANNEL_KINDS)):
        by_key[e.key].append(e)
    # A random walk has no statuses to announce until it runs; bars need trades.
    assert {(TRADES, s) for s in NAMES} | {(QUOTES, s) for s in NAMES} <= set(by_key) <= set(start)
    for key, events in by_key.items():
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert {e.epoch for e in events} == {start[key]}
        assert [json.loads(e.wire)["seq"] for e in events] == [e.seq for e in events]
        assert world.seq(*key) == len(events)
    # activity=1.0: every symbol quotes on every step.
    assert all(len(by_key[(QUOTES, sym)]) == 60 for sym in NAMES)


def test_one_epoch_per_register_call() -> None:
    """Streams registered together share one epoch; all of them start at seq 0."""
    world = World()
    epochs = {world.epoch(ch, sym) for ch in (TRADES, QUOTES) for sym in NAMES}
    assert len(epochs) == 1
    assert all(world.seq(ch, sym) == 0 for ch in (TRADES, QUOTES) for sym in NAMES)


def test_prices_are_on_the_tick_grid_without_float_noise() -> None:
    """Every price is a multiple of its tick, printed with at most the tick's decimals."""
    world = World()
    world.step(400)
    specs = world.sequencer.symbols
    checked = 0
    for e in world.events():
        tick = specs[e.sym].tick_size
        decimals = specs[e.sym].price_decimals
        assert "00000000" not in e.wire
        assert "99999999" not in e.wire
        for name in ("price", "bid", "ask"):
            if name not in e.fields:
                continue
            value = e.fields[name]
            text = repr(value)
            assert Decimal(text) % tick == 0, f"{e.sym} {name}={text} is off the {tick} grid"
            assert len(text.partition(".")[2]) <= decimals
            assert f'"{name}":{text}' in e.wire
            checked += 1
    assert checked > 1000


def test_quotes_are_uncrossed_and_trades_print_at_the_quote() -> None:
    """bid < ask on every quote, and every trade prints at the bid or the ask of the quote before it."""
    world = World()
    world.step(200)
    latest: dict[str, dict[str, Any]] = {}
    trades = 0
    for e in world.events():
        if e.ch == QUOTES:
            assert 0 < e.fields["bid"] < e.fields["ask"]
            latest[e.sym] = e.fields
        else:
            assert e.fields["price"] in (latest[e.sym]["bid"], latest[e.sym]["ask"])
            assert e.fields["size"] > 0
            trades += 1
    assert trades > 0


def test_same_seed_same_events() -> None:
    """Two runs with one seed publish identical events; another seed publishes different ones."""
    runs = []
    for seed in (42, 42, 43):
        world = World(seed=seed)
        world.step(150)
        runs.append([e.wire for e in world.events()])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_day_stats_follow_trades() -> None:
    """A snapshot's stats are open/high/low/volume of the trades so far and the previous close."""
    world = World()
    world.step(80)
    trades = [e for e in world.events() if e.key == (TRADES, "AAPL")]
    assert trades
    body = world.hub.streams[(TRADES, "AAPL")].snapshot_body(world.clock.ms())
    prices = [e.fields["price"] for e in trades]
    assert body["seq"] == trades[-1].seq
    assert body["data"]["open"] == prices[0]
    assert body["data"]["high"] == max(prices)
    assert body["data"]["low"] == min(prices)
    assert body["data"]["volume"] == sum(e.fields["size"] for e in trades)
    assert body["data"]["prev_close"] == 189.5
    assert body["data"]["price_decimals"] == 2
    assert body["data"]["price"] == prices[-1]


def test_impossible_ticks_are_dropped_without_using_a_seq() -> None:
    """A crossed quote or a zero-size trade is dropped and does not consume a seq."""
    world = World()
    world.sequencer.on_tick(Quote("AAPL", 1, 100, 100, 99, 100))
    world.sequencer.on_tick(Trade("AAPL", 1, 18950, 0))
    world.sequencer.on_tick(Trade("NOPE", 1, 18950, 100))
    assert world.events() == []
    world.sequencer.on_tick(Trade("AAPL", 2, 18950, 100))
    assert [(e.key, e.seq, e.fields["price"]) for e in world.events()] == [((TRADES, "AAPL"), 1, 189.5)]


def test_a_burst_publishes_what_tick_by_tick_would_in_one_bus_call() -> None:
    """Sequencer.burst: same events and seqs as on_tick one by one, one publish for them all."""
    ticks: list[Tick] = [Trade(sym, 1_000 + i, 18_000 + i, 100) for i in range(20) for sym in ("AAPL", "MSFT")]
    worlds = [World(), World()]
    calls: list[int] = []
    worlds[1].bus.subscribe(lambda messages: calls.append(len(messages)))
    for tick in ticks:
        worlds[0].sequencer.on_tick(tick)
    emit_burst(worlds[1].sequencer, ticks)
    assert calls == [len(worlds[1].events(CHANNEL_KINDS_ALL))]
    wires = [[(e.key, e.seq, e.wire) for e in world.events(CHANNEL_KINDS_ALL)] for world in worlds]
    assert wires[0] == wires[1]
    assert len(wires[1]) > len(ticks)  # the trades, and bars


def test_a_failing_tick_mid_burst_still_publishes_what_was_sequenced() -> None:
    world = World()
    good = Trade("AAPL", 1, 18_000, 100)
    broken = Trade("AAPL", 2, "not ticks", 100)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        world.sequencer.burst([good, broken])
    assert [e.seq for e in world.events((TRADES,))] == [1]
    assert world.seq(TRADES, "AAPL") == 1


def test_emit_burst_falls_back_to_one_call_per_tick() -> None:
    got: list[Tick] = []
    ticks: list[Tick] = [Trade("AAPL", 1, 1, 1), Trade("MSFT", 1, 1, 1)]
    emit_burst(got.append, ticks)
    assert got == ticks


async def test_chunks_sealed_out_of_turn_still_reach_every_subscriber() -> None:
    """One client answering a request seals the turn's chunks; the others still get them."""
    bus = MemoryBus(100)
    hub = Hub(bus, batched=True)
    sequencer = Sequencer(bus.publish_many)
    sequencer.register([SymbolSpec("AAPL", Decimal("0.01"), 18_000)])
    sessions = [Session(hub, StreamSettings(), wake=lambda: None, on_fatal=lambda: None, clock=time.time)
                for _ in range(2)]  # fmt: skip
    for session in sessions:
        session.on_text(json.dumps({"op": "subscribe", "channels": ["trades"], "symbols": ["AAPL"], "snapshot": False}))
        while session.outbox.take_frame() is not None:
            pass
    sequencer.on_tick(Trade("AAPL", 1, 18_001, 100))
    sessions[0].on_text(json.dumps({"op": "ping"}))  # out of turn: seals and absorbs
    await asyncio.sleep(0)  # the turn ends: the hub's flush
    for session in sessions:
        frames = [json.loads(f) for f in iter(session.outbox.take_frame, None)]
        assert [e["seq"] for f in frames if f["type"] == "data" for e in f["events"]] == [1]


# --- the replay ring -----------------------------------------------------------------------


@pytest.mark.parametrize("after_seq", [0, 1, 37, 99, 100])
def test_replay_gives_exactly_the_events_after(after_seq: int) -> None:
    """replay(after_seq) returns the stream's events after after_seq, in order, and nothing else."""
    world = World()
    world.step(100)
    key = (QUOTES, "MSFT")
    published = [e for e in world.events() if e.key == key]
    assert len(published) == 100
    replayed = world.bus.replay(key, world.epoch(*key), after_seq)
    assert [e.seq for e in replayed] == list(range(after_seq + 1, 101))
    assert [(e.key, e.epoch, e.seq, e.wire) for e in replayed] == [
        (e.key, e.epoch, e.seq, e.wire) for e in published[after_seq:]
    ]


@pytest.mark.parametrize("window", [1, 63, 64, 65, 150])
def test_replay_window_is_exact_across_packed_segments(window: int) -> None:
    """The ring packs old events by SEGMENT; what can be replayed is still exactly the window."""
    bus = MemoryBus(window)
    bus.publish(StreamReset(TRADES, "AAPL", "E1", "START", {}))
    wires = [f'{{"ch":"trades","sym":"AAPL","seq":{seq},"note":"x{seq}"}}' for seq in range(1, 1001)]
    for seq, wire in enumerate(wires, 1):
        bus.publish(Event(TRADES, "AAPL", "E1", seq, seq, {}, {}, wire))
        if seq in (1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5, 1000):
            oldest = max(1, seq - window + 1)
            for after in {oldest - 1, (oldest - 1 + seq) // 2, seq - 1, seq}:
                replayed = bus.replay((TRADES, "AAPL"), "E1", after)
                assert [(e.seq, e.wire) for e in replayed] == list(
                    zip(range(after + 1, seq + 1), wires[after:seq], strict=True)
                )
            if oldest > 1:
                with pytest.raises(ReplayRefused) as info:
                    bus.replay((TRADES, "AAPL"), "E1", oldest - 2)
                assert info.value.reason == "TOO_OLD"


def test_replay_window_edge() -> None:
    """With a window of 20, the last 20 events can be replayed and one more is TOO_OLD."""
    world = World(window=20)
    world.step(100)
    key = (QUOTES, "AAPL")
    epoch = world.epoch(*key)
    assert [e.seq for e in world.bus.replay(key, epoch, 80)] == list(range(81, 101))
    with pytest.raises(ReplayRefused) as info:
        world.bus.replay(key, epoch, 79)
    assert info.value.reason == "TOO_OLD"


@pytest.mark.parametrize(
    ("key", "epoch", "after_seq", "reason"),
    [
        ((QUOTES, "AAPL"), "not-the-epoch", 10, "EPOCH_CHANGED"),
        ((QUOTES, "AAPL"), None, 51, "SEQ_AHEAD"),
        ((QUOTES, "ZZZZ"), None, 0, "UNKNOWN_STREAM"),
        (("news", "AAPL"), None, 0, "UNKNOWN_STREAM"),
    ],
)
def test_replay_refusals(key: StreamKey, epoch: str | None, after_seq: int, reason: str) -> None:
    """replay refuses another epoch, a position ahead of the stream and an unknown stream, with a reason."""
    world = World()
    world.step(50)
    with pytest.raises(ReplayRefused) as info:
        world.bus.replay(key, epoch or world.epoch(QUOTES, "AAPL"), after_seq)
    assert info.value.reason == reason


def test_reset_refuses_replay_of_the_old_epoch() -> None:
    """After a reset, the old epoch is gone from the replay ring and the new one starts empty."""
    world = World()
    world.step(10)
    key = (QUOTES, "AAPL")
    old = world.epoch(*key)
    world.sequencer.reset(["AAPL"], "FEED_RESTART")
    new = world.epoch(*key)
    assert new != old
    with pytest.raises(ReplayRefused) as info:
        world.bus.replay(key, old, 5)
    assert info.value.reason == "EPOCH_CHANGED"
    assert world.bus.replay(key, new, 0) == []
    world.step(3)
    assert [e.seq for e in world.bus.replay(key, new, 0)] == [1, 2, 3]


def test_reset_sends_reset_then_new_epoch_snapshot() -> None:
    """A sequencer reset gives subscribers `reset`, then a seq-0 snapshot of the new epoch, then seq 1."""
    world = World()
    client = Client(world)
    world.step(5)
    client.send({"op": "subscribe", "symbols": ["AAPL", "MSFT"]})
    client.frames()
    old = world.epoch(QUOTES, "AAPL")
    world.sequencer.reset(["AAPL"], "FEED_RESTART")
    frames = client.frames()
    assert [(f["type"], f["ch"], f["sym"]) for f in frames] == [
        ("reset", TRADES, "AAPL"),
        ("snapshot", TRADES, "AAPL"),
        ("reset", QUOTES, "AAPL"),
        ("snapshot", QUOTES, "AAPL"),
    ]
    new = world.epoch(QUOTES, "AAPL")
    assert new != old
    for reset, snapshot in zip(frames[::2], frames[1::2], strict=True):
        assert reset["epoch"] == new
        assert reset["reason"]
        assert snapshot["epoch"] == new
        assert snapshot["seq"] == 0
    assert world.epoch(QUOTES, "MSFT") == old  # other symbols keep their epoch
    world.step(2)
    client.frames()
    assert client.received[(QUOTES, "AAPL")][-2:] == [1, 2]
    assert client.epochs[(QUOTES, "AAPL")] == new


# --- session: hello, subscribe, snapshots --------------------------------------------------


def test_hello_lists_symbols_channels_and_limits() -> None:
    """hello is the first frame and lists every symbol, the channel kinds and the limits."""
    world = World()
    client = Client(world, max_subscriptions=7)
    client.session.hello()
    (hello,) = client.frames()
    assert hello["type"] == "hello"
    assert hello["protocol"] == "stockpush/1"
    assert hello["symbols"] == NAMES
    assert hello["channels"] == CHANNEL_KINDS
    assert hello["channels"][TRADES] == "event"
    assert hello["channels"][QUOTES] == "state"
    assert hello["limits"]["max_subscriptions"] == 7
    assert hello["server_ts"] == world.clock.ms()
    assert client.wakes == 1


def test_subscribe_acks_before_snapshots() -> None:
    """The ack comes first, then one snapshot per new stream, before any data (G2)."""
    world = World()
    world.step(10)
    client = Client(world)
    client.send({"op": "subscribe", "id": 1, "symbols": ["aapl", "MSFT"]})
    world.step(1)
    frames = client.frames()
    ack = frames[0]
    assert ack["type"] == "ack"
    assert ack["id"] == 1
    assert ack["op"] == "subscribe"
    assert ack["failed"] == []
    expected = [
        {"ch": ch, "sym": sym, "epoch": world.epoch(ch, sym), "seq": world.seq(ch, sym) - (ch == QUOTES)}
        for ch in (TRADES, QUOTES)
        for sym in ("AAPL", "MSFT")
    ]
    # The quote of the extra step came after the ack; trades may or may not have printed.
    assert [(e["ch"], e["sym"]) for e in ack["ok"]] == [(e["ch"], e["sym"]) for e in expected]
    assert [e for e in ack["ok"] if e["ch"] == QUOTES] == [e for e in expected if e["ch"] == QUOTES]
    assert ack["subscriptions"] == {TRADES: ["AAPL", "MSFT"], QUOTES: ["AAPL", "MSFT"]}
    snapshots = frames[1:5]
    assert [f["type"] for f in snapshots] == ["snapshot"] * 4
    assert {(f["ch"], f["sym"]) for f in snapshots} == {(e["ch"], e["sym"]) for e in expected}
    for snap in snapshots:
        position = next(e for e in ack["ok"] if (e["ch"], e["sym"]) == (snap["ch"], snap["sym"]))
        assert (snap["epoch"], snap["seq"]) == (position["epoch"], position["seq"])
    assert [f["type"] for f in frames[5:]] == ["data"]
    assert client.wakes >= 2


def test_snapshot_carries_latest_fields_and_stats() -> None:
    """A quotes snapshot holds the latest quote's fields plus the day statistics."""
    world = World()
    world.step(10)
    latest = [e for e in world.events() if e.key == (QUOTES, "SIRI")][-1]
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["SIRI"]})
    (snapshot,) = of_type(client.frames(), "snapshot")
    assert snapshot["seq"] == latest.seq == 10
    assert snapshot["ts"] == latest.ts
    for name, value in latest.fields.items():
        assert snapshot["data"][name] == value
    assert snapshot["data"]["prev_close"] == 0.8125
    assert snapshot["data"]["price_decimals"] == 4
    assert {"open", "high", "low", "volume"} <= set(snapshot["data"])


def test_snapshot_stitches_to_the_next_data_event() -> None:
    """Each snapshot's seq + 1 is the seq of the stream's next data event (G3)."""
    world = World()
    world.step(7)
    client = Client(world)
    client.send({"op": "subscribe", "symbols": ["*"]})
    frames = client.frames()
    snap_seq = {(f["ch"], f["sym"]): f["seq"] for f in of_type(frames, "snapshot")}
    assert len(snap_seq) == 2 * len(NAMES)
    world.step(20)
    first: dict[StreamKey, int] = {}
    for e in data_events(client.frames()):
        first.setdefault((e["ch"], e["sym"]), e["seq"])
    assert {key for key in first if key[0] == QUOTES} == {(QUOTES, sym) for sym in NAMES}
    for key, seq in first.items():
        assert seq == snap_seq[key] + 1


def test_long_session_sees_every_event_once_in_order() -> None:
    """Over many steps with intermittent reading, the client gets every event of its streams once, in order (G1)."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "symbols": ["*"]})
    for n in range(300):
        world.step()
        if n % 7 == 0:
            client.frames()
    client.frames()
    for key in [(ch, sym) for ch in (TRADES, QUOTES) for sym in NAMES]:
        assert client.received[key] == list(range(1, world.seq(*key) + 1))


def test_unknown_symbol_and_channel_are_listed_in_failed() -> None:
    """Unknown symbols and channels are listed in ack.failed with their codes; the rest is subscribed."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "id": "s", "channels": ["trades", "news"], "symbols": ["AAPL", "NOPE"]})
    frames = client.frames()
    ack = frames[0]
    assert [(e["ch"], e["sym"]) for e in ack["ok"]] == [(TRADES, "AAPL")]
    failed = {(e["ch"], e["sym"]): e["code"] for e in ack["failed"]}
    assert failed == {
        (TRADES, "NOPE"): "UNKNOWN_SYMBOL",
        ("news", "AAPL"): "UNKNOWN_CHANNEL",
        ("news", "NOPE"): "UNKNOWN_CHANNEL",
    }
    assert all(e["message"] for e in ack["failed"])
    assert ack["subscriptions"] == {TRADES: ["AAPL"]}
    assert [(f["ch"], f["sym"]) for f in of_type(frames, "snapshot")] == [(TRADES, "AAPL")]
    assert set(client.session.subscriptions) == {(TRADES, "AAPL")}


def test_snapshot_false_sends_no_snapshot() -> None:
    """snapshot:false subscribes without snapshots; data follows the ack's positions."""
    world = World()
    world.step(3)
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["AAPL"], "snapshot": False})
    world.step(2)
    frames = [json.loads(f) for f in iter(client.session.outbox.take_frame, None)]
    assert [f["type"] for f in frames] == ["ack", "data"]
    assert frames[0]["ok"][0]["seq"] == 3
    assert [e["seq"] for e in frames[1]["events"]] == [4, 5]


def test_subscription_limit_changes_nothing() -> None:
    """Subscribing past max_subscriptions is SUBSCRIPTION_LIMIT and leaves every subscription as it was."""
    world = World()
    client = Client(world, max_subscriptions=3)
    client.send({"op": "subscribe", "symbols": ["AAPL"]})
    client.frames()
    client.send({"op": "subscribe", "id": 9, "symbols": ["MSFT", "SIRI"]})
    (error,) = client.frames()
    assert error["type"] == "error"
    assert error["code"] == "SUBSCRIPTION_LIMIT"
    assert error["id"] == 9
    assert error["fatal"] is False
    assert "3" in error["message"]
    assert set(client.session.subscriptions) == {(TRADES, "AAPL"), (QUOTES, "AAPL")}
    assert client.session not in world.hub.streams[(QUOTES, "MSFT")].subscribers
    world.step(5)
    assert {e["sym"] for e in data_events(client.frames())} == {"AAPL"}
    assert client.session.fatal is None


def test_unsubscribe_stops_delivery() -> None:
    """After the unsubscribe ack no event of those streams arrives; others keep flowing (G2)."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "symbols": ["AAPL", "MSFT"]})
    client.frames()
    world.step(3)  # queued, not yet read
    client.send({"op": "unsubscribe", "id": 5, "symbols": ["aapl"]})
    world.step(20)
    frames = client.frames()
    at = next(i for i, f in enumerate(frames) if f["type"] == "ack")
    ack = frames[at]
    assert ack["op"] == "unsubscribe"
    assert ack["id"] == 5
    assert ack["ok"] == [{"ch": TRADES, "sym": "AAPL"}, {"ch": QUOTES, "sym": "AAPL"}]
    assert ack["subscriptions"] == {TRADES: ["MSFT"], QUOTES: ["MSFT"]}
    assert "AAPL" in {e["sym"] for e in data_events(frames[:at])}  # what was queued before still arrives
    after = data_events(frames[at + 1 :])
    assert {e["sym"] for e in after} == {"MSFT"}
    assert len([e for e in after if e["ch"] == QUOTES]) == 20
    assert client.session not in world.hub.streams[(QUOTES, "AAPL")].subscribers


def test_unsubscribe_all_and_not_subscribed() -> None:
    """unsubscribe all empties the subscriptions; unsubscribing an unknown stream is listed as failed."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "symbols": ["AAPL", "MSFT"]})
    client.send({"op": "unsubscribe", "channels": ["quotes"], "symbols": ["SIRI"]})
    client.send({"op": "unsubscribe", "all": True})
    frames = of_type(client.frames(), "ack")
    assert [(f["op"], len(f["ok"])) for f in frames] == [("subscribe", 4), ("unsubscribe", 0), ("unsubscribe", 4)]
    assert frames[1]["failed"][0]["code"] == "NOT_SUBSCRIBED"
    assert frames[2]["subscriptions"] == {}
    world.step(5)
    assert client.frames() == []


def test_subscriptions_op_lists_current_streams() -> None:
    """The subscriptions op answers with an ack listing the current subscriptions."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["SIRI", "AAPL"]})
    client.frames()
    client.send({"op": "subscriptions", "id": 3})
    (ack,) = client.frames()
    assert ack["op"] == "subscriptions"
    assert ack["id"] == 3
    assert ack["subscriptions"] == {QUOTES: ["AAPL", "SIRI"]}
    assert ack["count"] == 2


def test_ping_is_answered_with_pong() -> None:
    """ping gets a pong echoing id and client_ts, with the server's clock."""
    world = World()
    client = Client(world)
    client.send({"op": "ping", "id": "p1", "client_ts": 12.5})
    assert client.frames() == [{"type": "pong", "id": "p1", "client_ts": 12.5, "server_ts": world.clock.ms()}]


def test_bad_input_is_answered_and_the_session_continues() -> None:
    """Plain text, an empty subscribe and a binary frame each get BAD_REQUEST; the session stays usable."""
    world = World()
    client = Client(world)
    client.send("Hello, Server!")
    client.send({"op": "subscribe", "id": 4, "symbols": []})
    client.session.on_binary()
    client.send({"op": "ping", "id": 5})
    frames = client.frames()
    assert [(f["type"], f.get("code"), f.get("id")) for f in frames] == [
        ("error", "BAD_REQUEST", None),
        ("error", "BAD_REQUEST", 4),
        ("error", "BAD_REQUEST", None),
        ("pong", None, 5),
    ]
    assert all(f["fatal"] is False for f in frames[:3])
    assert client.session.fatal is None


# --- resume (G4) ---------------------------------------------------------------------------


def test_resume_replays_exactly_the_missing_events() -> None:
    """A resume within the window gets exactly the events after after_seq, then live ones."""
    world = World()
    first = Client(world)
    first.send({"op": "subscribe", "symbols": ["AAPL", "GRID"]})
    world.step(10)
    first.frames()
    positions = first.positions()
    seen = dict(first.last)
    first.session.close()
    world.step(30)

    second = Client(world)
    second.last = dict(seen)
    second.send({"op": "subscribe", "id": "r", "streams": positions})
    frames = second.frames()
    ack = frames[0]
    assert ack["type"] == "ack"
    assert ack["id"] == "r"
    assert ack["failed"] == []
    for entry in ack["ok"]:
        key = (entry["ch"], entry["sym"])
        assert entry["recovered"] is True
        assert entry["replayed"] == world.seq(*key) - seen[key]
        assert second.received[key] == list(range(seen[key] + 1, world.seq(*key) + 1))
    assert of_type(frames, "snapshot") == []
    world.step(5)
    second.frames()
    assert second.received[(QUOTES, "AAPL")] == list(range(seen[(QUOTES, "AAPL")] + 1, world.seq(QUOTES, "AAPL") + 1))


@pytest.mark.parametrize(
    ("reason", "window", "position"),
    [
        ("TOO_OLD", 10, lambda world: (world.epoch(QUOTES, "AAPL"), 2)),
        ("EPOCH_CHANGED", 10_000, lambda world: ("an-old-epoch", 2)),
        ("SEQ_AHEAD", 10_000, lambda world: (world.epoch(QUOTES, "AAPL"), world.seq(QUOTES, "AAPL") + 5)),
    ],
)
def test_resume_outside_the_window_gets_a_fresh_snapshot(reason: str, window: int, position: Any) -> None:
    """A resume that cannot be served is recovered:false with a reason and a snapshot that stitches (G3, G4)."""
    world = World(window=window)
    world.step(40)
    epoch, after_seq = position(world)
    client = Client(world)
    client.send({"op": "subscribe", "streams": [{"ch": QUOTES, "sym": "aapl", "epoch": epoch, "after_seq": after_seq}]})
    frames = client.frames()
    (entry,) = frames[0]["ok"]
    assert entry["recovered"] is False
    assert entry["reason"] == reason
    assert (entry["seq"], entry["epoch"]) == (world.seq(QUOTES, "AAPL"), world.epoch(QUOTES, "AAPL"))
    assert [f["type"] for f in frames] == ["ack", "snapshot"]
    assert frames[1]["seq"] == 40
    world.step(3)
    client.frames()
    assert client.received[(QUOTES, "AAPL")] == [41, 42, 43]


def test_resume_of_unknown_stream_is_listed_in_failed() -> None:
    """Resuming a stream that does not exist is listed in ack.failed."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "streams": [{"ch": QUOTES, "sym": "NOPE", "epoch": "e", "after_seq": 0}]})
    (ack,) = client.frames()
    assert ack["ok"] == []
    assert ack["failed"][0]["code"] == "UNKNOWN_SYMBOL"


def test_resume_of_a_live_stream_does_not_duplicate() -> None:
    """Resuming a stream that is already subscribed replays once, not on top of what was still queued."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["MSFT"]})
    client.frames()
    world.step(4)
    client.frames()
    world.step(6)  # queued, unread: seq 5..10
    position = client.positions()
    client.send({"op": "subscribe", "streams": position})
    world.step(2)
    client.frames()
    assert client.received[(QUOTES, "MSFT")] == list(range(1, 13))


# --- inbound rate limit --------------------------------------------------------------------


def test_rate_limit_answers_with_retry_after() -> None:
    """Past the burst, a message is refused with RATE_LIMITED and retry_after_ms from the refill rate."""
    world = World()
    client = Client(world, inbound_rate={"per_s": 2, "burst": 3})
    for n in range(3):
        client.send({"op": "ping", "id": n})
    assert [f["type"] for f in client.frames()] == ["pong"] * 3
    client.send({"op": "ping", "id": 3})
    world.clock.advance(0.25)  # half a token back at 2/s
    client.send({"op": "ping", "id": 4})
    frames = client.frames()
    assert [(f["type"], f["code"], f["retry_after_ms"], f["fatal"]) for f in frames] == [
        ("error", "RATE_LIMITED", 500, False),
        ("error", "RATE_LIMITED", 250, False),
    ]
    world.clock.advance(1.0)
    client.send({"op": "ping", "id": 5})
    assert client.frames() == [{"type": "pong", "id": 5, "server_ts": world.clock.ms()}]
    assert client.session.fatal is None


def test_persistent_flooding_closes_4200() -> None:
    """flood_close_after refusals within 10 s end the session with close code 4200."""
    world = World()
    client = Client(world, inbound_rate={"per_s": 1, "burst": 1}, flood_close_after=5)
    client.send({"op": "ping"})
    for _ in range(4):
        client.send({"op": "ping"})
    frames = client.frames()
    assert [f.get("code") for f in frames] == [None] + ["RATE_LIMITED"] * 4
    assert client.session.fatal is None
    client.send({"op": "ping"})
    fatal = client.session.fatal
    assert fatal is not None
    assert fatal.code == CloseCode.RATE_LIMITED == 4200
    assert fatal.frame is not None
    error = json.loads(fatal.frame)
    assert (error["type"], error["code"], error["fatal"]) == ("error", "RATE_LIMITED", True)
    assert error["retry_after_ms"] > 0
    assert client.fatal_calls == 1
    client.send({"op": "ping"})
    assert client.session.outbox.take_frame() is None
    assert client.fatal_calls == 1


def test_refusals_spread_over_more_than_10_s_do_not_close() -> None:
    """Rate-limit refusals further apart than the flood window never close the session."""
    world = World()
    client = Client(world, inbound_rate={"per_s": 0.01, "burst": 1}, flood_close_after=3)
    client.send({"op": "ping"})
    for _ in range(10):
        world.clock.advance(6.0)
        client.send({"op": "ping"})
    assert client.session.fatal is None
    assert [f["code"] for f in client.frames()[1:]] == ["RATE_LIMITED"] * 10


# --- slow consumers (G5) -------------------------------------------------------------------


async def test_a_slow_notice_in_the_middle_of_a_turn_keeps_events_in_order() -> None:
    """Crossing half the outbox while taking chunks event by event sends SLOW_CONSUMER, nothing reordered."""
    world = World()
    world.hub.batched = True  # as in the server: chunks are handed over per turn, absorbed later
    client = Client(world, send_buffer_bytes=64 * 1024, max_batch_bytes=1024)
    client.send({"op": "subscribe", "channels": ["trades", "quotes"], "symbols": ["*"]})
    client.frames()
    outbox = client.session.outbox
    while outbox.bytes < outbox.half - 1500:
        world.step(1)
        world.hub.flush()
    assert not outbox.conflating
    world.step(20)
    world.hub.seal()  # this turn's chunks are in the client's inbox...
    world.step(20)  # ...and newer events wait in open chunks
    client.session.absorb()  # crosses half: one by one, with a notice in the middle
    world.hub.flush()
    frames = client.frames()  # Client checks every stream's order
    assert [n["code"] for n in of_type(frames, "notice")] == ["SLOW_CONSUMER"]
    assert client.session.fatal is None
    for sym in NAMES:
        assert client.last[(TRADES, sym)] == world.seq(TRADES, sym)


async def test_while_paced_chunks_wait_for_the_session_s_wake_group() -> None:
    """A deferring hub holds chunks per wake group; releasing the group and poking delivers them in order.

    Requests still catch up first.
    """
    world = World()
    world.hub.batched = True
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["trades", "quotes"], "symbols": ["*"]})
    client.frames()
    world.hub.deferred = True  # what the pacer sets while it paces
    wakes = client.wakes
    world.step(10)
    world.hub.flush()
    world.step(10)
    world.hub.flush()
    assert not client.session.inbox and len(client.session.outbox) == 0  # held for the group
    world.hub.release((client.session.group + 1) % WAKE_GROUPS)  # another group's wake
    assert not client.session.inbox
    world.hub.release(client.session.group)
    assert client.session.inbox and len(client.session.outbox) == 0
    assert client.wakes == wakes  # nothing woke the writer: the beat will
    client.session.poke()
    assert client.wakes == wakes + 1
    client.frames()  # Client checks every stream's order
    assert all(client.last[(ch, sym)] == world.seq(ch, sym) for ch in (TRADES, QUOTES) for sym in NAMES)
    # A request answers after what was handed over before it (G2, G3), paced or not.
    world.step(5)
    world.hub.flush()
    client.send({"op": "subscribe", "channels": ["status"], "symbols": ["*"]})
    frames = client.frames()
    first_ack = next(i for i, f in enumerate(frames) if f["type"] == "ack")
    assert all(f["type"] == "data" for f in frames[:first_ack])
    assert client.last[(TRADES, NAMES[0])] == world.seq(TRADES, NAMES[0])
    # Pacing off: what the groups held is handed over, and the hub absorbs for every
    # subscriber at once again.
    world.step(5)
    world.hub.flush()
    world.hub.deferred = False
    assert client.session.inbox
    world.step(5)
    world.hub.flush()
    assert not client.session.inbox
    client.frames()
    assert all(client.last[(ch, sym)] == world.seq(ch, sym) for ch in (TRADES, QUOTES) for sym in NAMES)


async def test_while_paced_a_wake_group_s_members_each_get_exactly_their_streams_events() -> None:
    """Members that join, leave and unsubscribe mid-beat get every event of their streams once, in order."""
    world = World()
    world.hub.batched = True
    world.hub.deferred = True
    clients = [Client(world) for _ in range(2 * WAKE_GROUPS + 1)]
    early, late = clients[0], clients[WAKE_GROUPS]  # the same wake group
    assert early.session.group == late.session.group
    for client in clients[:-1]:
        client.send({"op": "subscribe", "channels": ["trades"], "symbols": ["*"]})
        client.frames()
    world.step(10)
    world.hub.flush()
    # Joins mid-beat: what the group holds was sealed before its snapshot.
    clients[-1].send({"op": "subscribe", "channels": ["trades"], "symbols": ["*"]})
    late.send({"op": "subscribe", "channels": ["quotes"], "symbols": [NAMES[0]]})
    early.send({"op": "unsubscribe", "channels": ["trades"], "symbols": [NAMES[1]]})
    world.step(10)
    world.hub.flush()
    for group in range(WAKE_GROUPS):
        world.hub.release(group)
    for client in clients:
        client.session.poke()
        client.frames()  # Client checks every stream's order: no gap, no repeat
        for sym in NAMES:
            if client is early and sym == NAMES[1]:
                continue
            assert client.last[(TRADES, sym)] == world.seq(TRADES, sym)
    assert late.last[(QUOTES, NAMES[0])] == world.seq(QUOTES, NAMES[0])
    last_seen = early.last[(TRADES, NAMES[1])]
    world.step(5)
    world.hub.flush()
    world.hub.release(early.session.group)
    early.session.poke()
    early.frames()
    assert early.last[(TRADES, NAMES[1])] == last_seen  # unsubscribed: nothing more of it
    assert early.last[(TRADES, NAMES[0])] == world.seq(TRADES, NAMES[0])
    # A member that leaves takes nothing more; the others of its group still get theirs.
    late.session.close()
    world.step(5)
    world.hub.flush()
    world.hub.release(early.session.group)
    assert not late.session.inbox
    early.session.poke()
    early.frames()
    assert early.last[(TRADES, NAMES[0])] == world.seq(TRADES, NAMES[0])


class DirectClient(Client):
    """A Client whose session may write frames at once, as under `stockpush serve` (Pump.write_now)."""

    def __init__(self, world: World, **settings: Any) -> None:
        super().__init__(world, **settings)
        self.written: list[str] = []
        self.socket_full = False
        self.session._write_now = self._write_now

    def _write_now(self, frame: str) -> bool:
        if self.socket_full:
            return False
        self.written.append(frame)
        return True

    def all_frames(self) -> list[dict[str, Any]]:
        """What reached the socket: frames written at once, then what the outbox holds, checked in order."""
        direct = [json.loads(frame) for frame in self.written]
        self.written.clear()
        for frame in direct:
            self._check(frame)
        return direct + self.frames()


async def test_while_paced_a_woken_session_with_nothing_queued_writes_its_frame_at_once() -> None:
    """The beat's frame skips the outbox when nothing waits there; otherwise it queues behind, in order."""
    world = World()
    world.hub.batched = True
    client = DirectClient(world)
    client.send({"op": "subscribe", "channels": ["trades", "quotes"], "symbols": ["*"]})
    assert client.all_frames()  # hello, ack, snapshots: through the outbox
    world.hub.deferred = True
    wakes = client.wakes
    world.step(10)
    world.hub.flush()
    world.hub.release(client.session.group)
    client.session.poke()
    assert len(client.written) == 1 and client.wakes == wakes  # one frame, no trip through the writer
    assert not client.session.inbox and len(client.session.outbox) == 0 and client.session.outbox.bytes == 0
    assert [f["type"] for f in client.all_frames()] == ["data"]
    # A full socket: the events queue in the outbox as before, and the next beat's queue behind them.
    client.socket_full = True
    world.step(5)
    world.hub.flush()
    world.hub.release(client.session.group)
    client.session.poke()
    assert not client.written and len(client.session.outbox)
    client.socket_full = False
    world.step(5)
    world.hub.flush()
    world.hub.release(client.session.group)
    client.session.poke()
    assert not client.written  # something waits in the outbox: nothing overtakes it
    client.all_frames()  # Client checks every stream's order
    # A beat's worth bigger than a frame may be goes through the outbox, which splits it.
    client.session.outbox.batch_bytes = 300
    world.step(20)
    world.hub.flush()
    world.hub.release(client.session.group)
    client.session.poke()
    assert not client.written
    frames = client.all_frames()
    assert len(frames) > 1 and all(len(json.dumps(f, separators=(",", ":"))) <= 300 for f in frames)
    assert all(client.last[(ch, sym)] == world.seq(ch, sym) for ch in (TRADES, QUOTES) for sym in NAMES)


async def test_while_paced_only_a_plain_session_writes_its_frame_at_once() -> None:
    """Throttles keep the outbox's way (they hold events back); a failed session writes nothing.

    A frame written at once counts as the connection being alive (no heartbeat owed).
    """
    world = World()
    world.hub.batched = True
    plain, throttled = DirectClient(world), DirectClient(world)
    plain.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["*"]})
    throttled.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["*"], "throttle_ms": 1000})
    for client in (plain, throttled):
        client.all_frames()
    world.hub.deferred = True
    plain.session.heartbeat_due = True
    world.step(4)  # one second
    world.hub.flush()
    world.hub.release_all()
    for client in (plain, throttled):
        client.session.poke()
    assert len(plain.written) == 1 and plain.session.heartbeat_due is False
    assert not throttled.written  # the throttle decides what goes, through the outbox
    throttled.all_frames()
    plain.all_frames()
    assert all(len(throttled.received[(QUOTES, sym)]) <= 2 for sym in NAMES)  # one second at 1 a second
    assert sum(len(plain.received[(QUOTES, sym)]) for sym in NAMES) > 2 * len(NAMES)
    plain.session.fail("boom")
    world.step(5)
    world.hub.flush()
    world.hub.release_all()
    plain.session.poke()
    assert not plain.written


class Holder:
    """The least a hub subscriber is: an inbox and a wake group."""

    def __init__(self, group: int) -> None:
        self.inbox: list[Chunk] = []
        self.group = group

    def seqs(self, key: StreamKey) -> list[int]:
        return [e.seq for chunk in self.inbox if chunk.key == key for e in chunk.events]


async def test_while_paced_a_subscriber_attached_mid_beat_gets_only_what_was_sealed_after() -> None:
    """The hub's own rule, whatever the subscriber: a group's held chunks are not for a newcomer."""
    world = World()
    world.hub.batched = True
    world.hub.deferred = True
    key = (TRADES, NAMES[0])
    first, second = Holder(3), Holder(3)
    world.hub.attach(key, first)  # type: ignore[arg-type]
    world.step(10)
    world.hub.flush()
    joined_at = world.seq(*key)
    world.hub.attach(key, second)  # type: ignore[arg-type]
    world.step(10)
    world.hub.flush()
    world.hub.release(3)
    assert first.seqs(key) == list(range(1, world.seq(*key) + 1))
    assert second.seqs(key) == list(range(joined_at + 1, world.seq(*key) + 1))
    # Leaving mid-beat: what was sealed while subscribed is still everyone's, then no more.
    world.step(10)
    world.hub.flush()
    left_at = world.seq(*key)
    world.hub.detach(key, second)  # type: ignore[arg-type]
    world.step(10)
    world.hub.flush()
    world.hub.release(3)
    assert first.seqs(key) == list(range(1, world.seq(*key) + 1))
    assert second.seqs(key) == list(range(joined_at + 1, left_at + 1))


async def test_while_paced_a_big_chunk_reaches_the_group_in_pieces_in_order() -> None:
    """A turn's chunk over chunk_bytes is cut once and held for the group as pieces, in order."""
    world = World()
    world.hub.batched = True
    world.hub.deferred = True
    world.hub.chunk_bytes = 200
    key = (TRADES, NAMES[0])
    holder = Holder(2)
    world.hub.attach(key, holder)  # type: ignore[arg-type]
    world.step(40)  # one turn: one chunk, cut at sealing
    world.hub.flush()
    world.hub.release(2)
    assert len(holder.inbox) > 1 and all(chunk.size <= 200 for chunk in holder.inbox)
    assert holder.seqs(key) == list(range(1, world.seq(*key) + 1))


def test_slow_reader_of_quotes_is_conflated_not_closed() -> None:
    """A client that stops reading quotes gets notice SLOW_CONSUMER and conflated events; it stays bounded."""
    world = World()
    client = Client(world, send_buffer_bytes=4096, max_batch_bytes=1024)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["*"]})
    client.frames()
    world.step(300)
    outbox = client.session.outbox
    assert client.session.fatal is None
    assert outbox.conflating
    assert outbox.bytes <= outbox.limit
    frames = client.frames()
    (notice,) = of_type(frames, "notice")
    assert notice["code"] == "SLOW_CONSUMER"
    assert notice["limit_bytes"] == 4096
    marked = [e for e in data_events(frames) if "prev_seq" in e]
    assert marked
    for sym in NAMES:
        assert client.last[(QUOTES, sym)] == world.seq(QUOTES, sym) == 300


def test_slow_reader_of_trades_is_closed_4100_and_resumes_losslessly() -> None:
    """A full outbox ends the session with SLOW_CONSUMER / 4100; a resume then misses nothing."""
    world = World()
    client = Client(world, send_buffer_bytes=4096, max_batch_bytes=1024)
    client.send({"op": "subscribe", "symbols": ["*"]})
    client.frames()  # the ack and snapshots are read, then the client stops reading
    for _ in range(500):
        world.step()
        if client.session.fatal is not None:
            break
    fatal = client.session.fatal
    assert fatal is not None
    assert fatal.code == CloseCode.SLOW_CONSUMER == 4100
    assert fatal.frame is not None
    error = json.loads(fatal.frame)
    assert (error["type"], error["code"], error["fatal"]) == ("error", "SLOW_CONSUMER", True)
    assert client.fatal_calls == 1
    assert client.session.outbox.bytes == 0
    world.step(10)  # a dead session queues nothing more
    assert client.session.outbox.take_frame() is None
    assert client.fatal_calls == 1

    seen = dict(client.last)
    client.session.close()
    again = Client(world)
    again.last = dict(seen)
    again.send({"op": "subscribe", "streams": client.positions()})
    world.step(3)
    frames = again.frames()
    assert all(entry["recovered"] for entry in frames[0]["ok"])
    for key, seq in seen.items():
        assert again.received[key] == list(range(seq + 1, world.seq(*key) + 1))


def test_wake_is_called_when_frames_are_queued() -> None:
    """The session wakes its writer for answers and for delivered events."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["AAPL"]})
    after_subscribe = client.wakes
    assert after_subscribe >= 1
    world.step(3)
    assert client.wakes == after_subscribe + 3


def test_close_detaches_from_every_stream() -> None:
    """close() removes the session from the hub, so nothing is delivered to it any more."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "symbols": ["*"]})
    client.session.close()
    assert all(client.session not in stream.subscribers for stream in world.hub.streams.values())
    assert client.session.subscriptions == {}
    world.step(5)
    assert client.session.outbox.take_frame() is None


def test_wake_groups_stay_even_as_connections_come_and_go() -> None:
    """A new connection joins the smallest wake group; detach and close leave it exactly once."""
    world = World()
    clients = [Client(world) for _ in range(3 * WAKE_GROUPS)]
    assert world.hub.group_sizes == [3] * WAKE_GROUPS
    # Churn that empties some groups more than others: all of group 0 and 1, one of group 2.
    gone = [c for c in clients if c.session.group in (0, 1)] + [next(c for c in clients if c.session.group == 2)]
    for client in gone:
        client.session.detach()
        client.session.close()  # the endpoint detaches, then closes: one leave, not two
    assert world.hub.group_sizes == [0, 0, 2] + [3] * (WAKE_GROUPS - 3)
    newcomers = [Client(world) for _ in range(len(gone))]
    assert sorted(c.session.group for c in newcomers) == [0, 0, 0, 1, 1, 1, 2]
    assert world.hub.group_sizes == [3] * WAKE_GROUPS


async def test_a_connection_gone_before_it_is_served_gives_back_its_wake_group_place() -> None:
    """The accept failing (the client left mid-handshake) leaves no session in a group or the runtime."""
    from types import SimpleNamespace

    import pytest

    from service.endpoint import stream_endpoint
    from service.runtime import Runtime
    from tests.helpers import make_settings

    runtime = Runtime(make_settings())

    async def accept() -> None:
        raise OSError("the peer left during the handshake")

    websocket = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(runtime=runtime)), client=None, scope={},
                                accept=accept)  # fmt: skip
    for _ in range(2 * WAKE_GROUPS):
        with pytest.raises(OSError, match="handshake"):
            await stream_endpoint(websocket)  # type: ignore[arg-type]
    assert runtime.hub.group_sizes == [0] * WAKE_GROUPS
    assert not runtime.connections
