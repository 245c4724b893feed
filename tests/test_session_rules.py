"""In memory: the finer rules of requests (resume budget, unsubscribe answers, ids on refusals)."""

from __future__ import annotations

import asyncio
import json

from service.events import QUOTES, TRADES
from tests.test_core import Client, World, data_events, of_type


def test_resume_beyond_the_replay_budget_gets_a_snapshot() -> None:
    """A resume that would replay more than max_replay_bytes gets REPLAY_TOO_LARGE and a snapshot."""
    world = World()
    client = Client(world, max_replay_bytes=4096)
    epoch = world.epoch(TRADES, "AAPL")
    world.step(200)
    client.last[(TRADES, "MSFT")] = world.seq(TRADES, "MSFT") - 2  # what this client had seen
    client.send({"op": "subscribe", "id": "r", "streams": [
        {"ch": "trades", "sym": "AAPL", "epoch": epoch, "after_seq": 0},
        {"ch": "trades", "sym": "MSFT", "epoch": epoch, "after_seq": world.seq(TRADES, "MSFT") - 2},
    ]})  # fmt: skip
    frames = client.frames()
    ack = of_type(frames, "ack")[0]
    by_sym = {e["sym"]: e for e in ack["ok"]}
    assert by_sym["AAPL"]["recovered"] is False
    assert by_sym["AAPL"]["reason"] == "REPLAY_TOO_LARGE"
    assert by_sym["MSFT"]["recovered"] is True
    assert by_sym["MSFT"]["replayed"] == 2
    assert [(s["sym"], s["seq"]) for s in of_type(frames, "snapshot")] == [("AAPL", world.seq(TRADES, "AAPL"))]
    assert [e["seq"] for e in data_events(frames) if e["sym"] == "MSFT"] == [
        world.seq(TRADES, "MSFT") - 1,
        world.seq(TRADES, "MSFT"),
    ]


def test_resume_listing_a_stream_twice_reports_it() -> None:
    """A stream named twice in one resume is answered once, and the repeat is listed as failed."""
    world = World()
    client = Client(world)
    epoch = world.epoch(TRADES, "AAPL")
    position = {"ch": "trades", "sym": "AAPL", "epoch": epoch, "after_seq": 0}
    client.send({"op": "subscribe", "streams": [position, position]})
    (ack,) = of_type(client.frames(), "ack")
    assert len(ack["ok"]) == 1
    assert [(f["sym"], f["code"]) for f in ack["failed"]] == [("AAPL", "BAD_REQUEST")]


def test_unsubscribe_without_channels_removes_every_channel_of_the_symbol() -> None:
    """unsubscribe by symbol alone drops all its channels and reports only symbols not subscribed."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes", "status"], "symbols": ["AAPL"]})
    client.send({"op": "unsubscribe", "id": "u", "symbols": ["AAPL", "MSFT"]})
    ack = next(f for f in of_type(client.frames(), "ack") if f.get("id") == "u")
    assert sorted((e["ch"], e["sym"]) for e in ack["ok"]) == [(QUOTES, "AAPL"), ("status", "AAPL")]
    assert [(f["ch"], f["sym"], f["code"]) for f in ack["failed"]] == [("*", "MSFT", "NOT_SUBSCRIBED")]
    assert ack["subscriptions"] == {}


def test_unsubscribe_named_channels_reports_unknown_and_missing() -> None:
    """With channels named, an unknown channel is UNKNOWN_CHANNEL and an unsubscribed one NOT_SUBSCRIBED."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["trades"], "symbols": ["AAPL"]})
    client.send({"op": "unsubscribe", "id": "u", "channels": ["trades", "quotes", "news"], "symbols": ["AAPL"]})
    ack = next(f for f in of_type(client.frames(), "ack") if f.get("id") == "u")
    assert [(e["ch"], e["sym"]) for e in ack["ok"]] == [(TRADES, "AAPL")]
    assert sorted((f["ch"], f["code"]) for f in ack["failed"]) == [
        ("news", "UNKNOWN_CHANNEL"),
        ("quotes", "NOT_SUBSCRIBED"),
    ]


def test_empty_unsubscribe_is_a_bad_request() -> None:
    """unsubscribe with an empty symbol list is refused like an empty subscribe."""
    world = World()
    client = Client(world)
    client.send({"op": "unsubscribe", "id": 4, "symbols": []})
    (error,) = client.frames()
    assert (error["type"], error["code"], error["id"]) == ("error", "BAD_REQUEST", 4)


def test_rate_limited_refusal_carries_the_request_id() -> None:
    """A request refused by the rate limit is answered with its own id."""
    world = World()
    client = Client(world, inbound_rate={"per_s": 1, "burst": 1})
    client.send({"op": "ping", "id": "first"})
    client.send({"op": "ping", "id": "second"})
    pong, refusal = client.frames()
    assert (pong["type"], pong["id"]) == ("pong", "first")
    assert (refusal["code"], refusal["id"]) == ("RATE_LIMITED", "second")


def test_holding_a_throttled_event_wakes_the_writer() -> None:
    """When an update is held back, the writer is woken so it can arm a timer for it."""
    world = World()
    client = Client(world)
    client.send({"op": "subscribe", "channels": ["quotes"], "symbols": ["AAPL"], "throttle_ms": 1000})
    client.frames()
    world.step(1)  # the first quote goes out at once
    wakes = client.wakes
    world.step(1)  # the next one is held
    assert client.session.flush_throttled() is not None
    assert client.wakes > wakes


def test_bar_snapshot_keeps_the_bar_values() -> None:
    """A bars snapshot carries the bar's own open/high/low/volume, not the day's."""
    world = World()
    world.step(100)
    body = world.hub.streams[("bars.1m", "AAPL")].snapshot_body(0)
    latest = world.hub.streams[("bars.1m", "AAPL")].latest
    assert latest is not None
    for field in ("open", "high", "low", "close", "volume", "trades"):
        assert body["data"][field] == latest.fields[field]
    assert body["data"]["volume"] <= world.hub.day["AAPL"]["volume"]


def test_repeated_resumes_cannot_queue_more_than_the_replay_budget() -> None:
    """Resume-then-unsubscribe cycles never queue more replay than max_replay_bytes per connection."""
    world = World()
    budget = 8192
    client = Client(world, max_replay_bytes=budget)
    world.step(40)  # each cycle fits the budget; two cycles would not
    positions = [{"ch": "trades", "sym": sym, "epoch": world.epoch(TRADES, sym), "after_seq": 0}
                 for sym in ("AAPL", "MSFT", "SIRI", "GRID")]  # fmt: skip
    for _ in range(10):
        client.session.on_text(json.dumps({"op": "subscribe", "streams": positions}))
        client.session.on_text(json.dumps({"op": "unsubscribe", "all": True}))
        assert client.session.outbox.replay_bytes <= budget
    assert client.session.outbox.replay_bytes > budget // 2  # the first cycle was replayed
    assert client.session.fatal is None


def test_nothing_is_queued_after_an_overflow() -> None:
    """When a request's ack overflows the outbox, its snapshots are not sent without it."""
    world = World()
    client = Client(world, send_buffer_bytes=4096, max_batch_bytes=1024)
    client.send({"op": "subscribe", "channels": ["trades"], "symbols": ["*"]})
    client.frames()
    outbox = client.session.outbox
    while outbox.bytes < outbox.limit - 150:  # nobody drains: trades pile up, never conflated
        world.step(1)
    assert client.session.fatal is None
    client.session.on_text(json.dumps({"op": "subscribe", "channels": ["quotes"], "symbols": ["*"]}))
    assert client.session.fatal is not None
    assert client.session.fatal.code == 4100
    assert len(outbox) == 0  # no snapshot of an un-acked subscription waits to be sent


async def test_a_client_behind_takes_whole_chunks_in_order_and_quotes_still_conflate() -> None:
    """Past `behind` bytes a chunk is queued whole (one item), not event by event; G1 and conflation hold."""
    world = World()
    world.hub.batched = True  # as in the server: a turn's events of a stream make one chunk
    client = Client(world, send_buffer_bytes=256 * 1024, max_batch_bytes=4096)
    client.send({"op": "subscribe", "channels": ["trades", "quotes"], "symbols": ["*"]})
    client.frames()
    outbox = client.session.outbox
    first_trade = {sym: world.seq(TRADES, sym) + 1 for sym in ("AAPL", "MSFT")}
    while outbox.bytes < outbox.limit * 3 // 4:
        world.step(20)
        await asyncio.sleep(0)  # the hub's flush: each subscriber absorbs the turn's chunks
        assert client.session.fatal is None
    assert outbox.conflating and outbox.conflated > 0
    items = len(outbox)
    frames = client.frames()  # checks every seq: +1, or a quote's prev_seq
    events = data_events(frames)
    assert items * 3 < len(events)  # chunks of several events went in as one item each
    assert [f["code"] for f in of_type(frames, "notice")] == ["SLOW_CONSUMER"]
    for sym, first in first_trade.items():  # trades: every one, in order
        assert client.received[(TRADES, sym)] == list(range(first, world.seq(TRADES, sym) + 1))
