"""The Python client: its rule as pure code, then against real and scripted servers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from service import client as client_module
from service.client import (
    Backoff,
    BarEvent,
    ClientError,
    ConnectError,
    FatalCloseError,
    QuoteEvent,
    ServerProtocolError,
    SnapshotMessage,
    Stats,
    StatusEvent,
    StreamEvent,
    SubscribeError,
    Tracker,
    TradeEvent,
    connect,
    connect_sync,
    fresh_requests,
    resume_requests,
)
from service.protocol import AckMessage, DataMessage, parse_server_message
from tests.client_helpers import FAST, FakeServer, Ledger, ack, frame, hello, snapshot, trades, wait_for
from tests.helpers import TIMEOUT, Server

# --- the rule, pure ------------------------------------------------------------------------


def _msg(text: str) -> Any:
    return parse_server_message(text)


def _subscribed(*entries: tuple[str, int]) -> tuple[Tracker, Stats]:
    stats = Stats()
    tracker = Tracker(stats, clock=lambda: 2.0)
    ok = [{"ch": ch, "sym": "AAPL", "epoch": "E1", "seq": seq} for ch, seq in entries]
    tracker.on_ack(_msg(ack({"id": "s1"}, ok)), resume=False)
    for ch, seq in entries:
        tracker.on_snapshot(_msg(snapshot(ch, seq)))
    return tracker, stats


def _seqs(deliveries: list[Any]) -> list[int]:
    return [event.seq for event, _ in deliveries]


def _quote(seq: int, prev_seq: int | None = None) -> dict[str, Any]:
    event = {
        "ch": "quotes",
        "sym": "AAPL",
        "seq": seq,
        "ts": 1000,
        "bid": 1.0,
        "bid_size": 1,
        "ask": 2.0,
        "ask_size": 1,
    }
    if prev_seq is not None:
        event["prev_seq"] = prev_seq
    return event


def test_tracker_hands_over_in_order_and_drops_duplicates() -> None:
    """Events after the snapshot pass once; a seq already handed over is dropped and counted."""
    tracker, stats = _subscribed(("trades", 5))
    assert _seqs(tracker.on_data(_msg(trades(6, 7)))) == [6, 7]
    assert _seqs(tracker.on_data(_msg(trades(7, 8)))) == [8]
    assert stats.duplicates == 1 and stats.events == 3 and stats.gaps == 0
    assert stats.latency_ms == 2000 - 1008


def test_tracker_accepts_a_jump_only_with_the_matching_prev_seq() -> None:
    """prev_seq equal to the last seq makes a jump legal; any other jump asks for a resume."""
    tracker, stats = _subscribed(("quotes", 3))
    legal = DataMessage(type="data", events=[_quote(9, prev_seq=3)])  # type: ignore[list-item]
    assert _seqs(tracker.on_data(legal)) == [9]
    wrong = DataMessage(type="data", events=[_quote(12, prev_seq=10)])  # type: ignore[list-item]
    assert tracker.on_data(wrong) == []
    assert stats.gaps == 1
    assert [(p.ch, p.seq) for p in tracker.resync] == [("quotes", 9)]
    assert tracker.on_data(DataMessage(type="data", events=[_quote(10)])) == []  # type: ignore[list-item]
    assert resume_requests(tracker.resync)[0][0]["streams"] == [
        {"ch": "quotes", "sym": "AAPL", "epoch": "E1", "after_seq": 9}
    ]


def test_tracker_resume_ack_counts_replays_or_turns_refusal_into_reset() -> None:
    """A recovered resume marks its events as replayed; a refused one yields a reset, then waits for a snapshot."""
    tracker, stats = _subscribed(("trades", 5), ("quotes", 3))
    ok = [
        {"ch": "trades", "sym": "AAPL", "epoch": "E1", "seq": 7, "recovered": True, "replayed": 2},
        {"ch": "quotes", "sym": "AAPL", "epoch": "E2", "seq": 0, "recovered": False, "reason": "EPOCH_CHANGED"},
    ]
    out = tracker.on_ack(_msg(ack({"id": "r1"}, ok)), resume=True)
    assert [(type(e).__name__, e.epoch, e.reason) for e, _ in out] == [("ResetMessage", "E2", "EPOCH_CHANGED")]
    assert _seqs(tracker.on_data(_msg(trades(6, 7, 8)))) == [6, 7, 8]
    assert stats.replayed == 2 and stats.resets == 1
    assert tracker.on_data(DataMessage(type="data", events=[_quote(1)])) == []  # type: ignore[list-item]
    assert [e.seq for e, _ in tracker.on_snapshot(_msg(snapshot("quotes", 0, epoch="E2")))] == [0]
    assert _seqs(tracker.on_data(DataMessage(type="data", events=[_quote(1)]))) == [1]  # type: ignore[list-item]


def test_tracker_full_buffer_leaves_events_behind_until_taken() -> None:
    """Past the room given, a stream falls behind: its events are deferred until it is resumed."""
    tracker, stats = _subscribed(("trades", 5))
    assert _seqs(tracker.on_data(_msg(trades(6, 7, 8)), room=1)) == [6]
    assert _seqs(tracker.on_data(_msg(trades(9)), room=10)) == []
    assert stats.deferred == 3 and tracker.behind
    taken = tracker.take_behind()
    assert [(p.seq, p.resyncing) for p in taken] == [(6, True)] and not tracker.behind


def test_reconnect_requests_group_by_throttle_and_stay_small() -> None:
    """After a reconnect every stream is asked for: synced ones by position, others afresh, in chunks."""
    stats = Stats()
    tracker = Tracker(stats)
    for n in range(500):
        ok = [{"ch": "quotes", "sym": f"S{n}", "epoch": "E", "seq": 1}]
        tracker.on_ack(AckMessage.model_validate_json(ack({"id": "x"}, ok)), resume=False, throttle_ms=n % 2 * 250)
        if n < 450:
            tracker.on_snapshot(_msg(snapshot("quotes", 1, epoch="E", sym=f"S{n}")))
    resume, fresh = tracker.reconnected()
    resumes = resume_requests(resume)
    assert sorted(len(body["streams"]) for body, _ in resumes) == [25, 25, 200, 200]
    assert {throttle for _, throttle in resumes} == {0, 250}
    assert all(body["throttle_ms"] == throttle for body, throttle in resumes)
    afresh = fresh_requests(fresh)
    assert sum(len(body["symbols"]) for body, _ in afresh) == 50 and all(b["channels"] == ["quotes"] for b, _ in afresh)


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    """Delays double per attempt, are jittered between half and all of that, and stop at max_s."""
    backoff = Backoff(initial_s=0.5, max_s=4.0)
    assert [backoff.delay(n, 1.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.delay(2, 0.0) == 1.0


def test_public_names_are_exported() -> None:
    """Everything in __all__ exists, and the event types are the protocol's own models."""
    for name in client_module.__all__:
        assert hasattr(client_module, name), name
    assert client_module.KNOWN_CHANNELS == ("trades", "quotes", "status", "bars.1s", "bars.1m")


# --- against the real server ---------------------------------------------------------------


async def test_subscribe_yields_snapshots_then_typed_events(server: Server) -> None:
    """Every channel's snapshot comes first, then typed trades, quotes and bars; latency is measured."""
    channels = ["trades", "quotes", "status", "bars.1s", "bars.1m"]
    ledger = Ledger()
    async with connect(server.url, proxy=None) as stream:
        assert stream.hello is not None and "AAPL" in stream.hello.symbols
        result = await stream.subscribe(["aapl"], channels=channels)
        assert sorted(e.ch for e in result.ok or []) == sorted(channels)
        kinds: set[type] = set()
        async with asyncio.timeout(TIMEOUT):
            async for event in stream:
                ledger.add(event)
                kinds.add(type(event))
                if {TradeEvent, QuoteEvent, BarEvent} <= kinds and ledger.data >= 100:
                    break
    assert ledger.violations == []
    assert sorted(s.ch for s in ledger.snapshots) == sorted(channels)
    quote_snapshot = next(s for s in ledger.snapshots if s.ch == "quotes")
    assert quote_snapshot.data.price_decimals == 2 and quote_snapshot.data.prev_close == 100.0
    latest = quote_snapshot.latest_event()
    assert isinstance(latest, QuoteEvent) and latest.bid < latest.ask
    status = next(s for s in ledger.snapshots if s.ch == "status").latest_event()
    assert isinstance(status, StatusEvent) and status.status == "open"
    assert stream.stats.events >= ledger.data and stream.stats.reconnects == 0
    assert stream.stats.latency_ms is not None and 0 <= stream.stats.latency_avg_ms < 5000  # type: ignore[operator]


async def test_unknown_symbol_raises_and_the_rest_stays_subscribed(server: Server) -> None:
    """A refused stream raises SubscribeError naming it; the streams that were accepted keep coming."""
    async with connect(server.url, proxy=None) as stream:
        with pytest.raises(SubscribeError, match="ZZZZ") as caught:
            await stream.subscribe(["AAPL", "ZZZZ"], channels=["trades"])
        assert caught.value.ack is not None and [f.code for f in caught.value.ack.failed or []] == ["UNKNOWN_SYMBOL"]
        first = await anext(stream)
        assert isinstance(first, SnapshotMessage) and first.sym == "AAPL"
        with pytest.raises(ValueError, match="unknown channel"):
            await stream.subscribe(["AAPL"], channels=["news"])
        with pytest.raises(TypeError, match="list"):
            await stream.subscribe("AAPL")


async def test_unsubscribe_stops_those_streams_even_if_buffered(server: Server) -> None:
    """After unsubscribe returns no event of those streams is handed over, buffered or not."""
    async with connect(server.url, proxy=None) as stream:
        await stream.subscribe(["AAPL", "MSFT"], channels=["trades", "quotes"])
        await wait_for(lambda: stream.stats.events >= 50, what="events to buffer up")
        result = await stream.unsubscribe(["AAPL"])
        assert result.subscriptions == {"trades": ["MSFT"], "quotes": ["MSFT"]}
        seen = 0
        async with asyncio.timeout(TIMEOUT):
            async for event in stream:
                assert event.sym == "MSFT", event
                seen += 1
                if seen >= 100:
                    break
        await stream.unsubscribe()
        assert stream._tracker.positions == {}


async def test_server_reset_becomes_reset_then_seq0_snapshot(server: Server) -> None:
    """A stream restarting under the client yields ResetMessage, a seq-0 snapshot in the new epoch, then seq 1."""
    async with connect(server.url, proxy=None) as stream:
        await stream.subscribe(["AAPL"], channels=["trades"])
        ledger = Ledger()
        async with asyncio.timeout(TIMEOUT):
            async for event in stream:
                ledger.add(event)
                if ledger.data == 5 and isinstance(event, TradeEvent):
                    server.runtime.sequencer.reset(["AAPL"], "TEST")
                if ledger.resets and ledger.last.get(("trades", "AAPL"), ("", 0))[1] >= 2:
                    break
    assert ledger.violations == []
    reset = ledger.resets[0]
    assert reset.reason == "TEST" and stream.stats.resets == 1
    after = ledger.events[ledger.events.index(reset) + 1 :]
    assert isinstance(after[0], SnapshotMessage) and after[0].seq == 0 and after[0].epoch == reset.epoch
    assert after[0].latest_event() is None
    assert [e.seq for e in after[1:3]] == [1, 2]


async def test_blocking_iterator_for_scripts(server: Server) -> None:
    """connect_sync gives the same stream to code that is not async (run here in a worker thread)."""

    def script() -> tuple[list[str], Stats]:
        kinds: list[str] = []
        with connect_sync(server.url, proxy=None) as stream:
            stream.subscribe(["MSFT"], channels=["trades"])
            for event in stream:
                kinds.append(type(event).__name__)
                if len(kinds) == 20:
                    break
            return kinds, stream.stats

    kinds, stats = await asyncio.wait_for(asyncio.to_thread(script), TIMEOUT)
    assert kinds[0] == "SnapshotMessage" and set(kinds[1:]) == {"TradeEvent"}
    assert stats.events == 19


async def test_unreachable_server_raises_connect_error() -> None:
    """Nothing listening: entering the stream raises ConnectError at once, saying so."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectError, match="connection refused"):
        async with connect(f"ws://127.0.0.1:{port}/v1/stream", proxy=None):
            pass
    with pytest.raises(ConnectError, match="not a ws"):
        async with connect("http://127.0.0.1/v1/stream", proxy=None):
            pass


# --- against scripted servers --------------------------------------------------------------


@pytest.fixture
async def fakes() -> Any:
    """Start scripted servers; closed at teardown."""
    started: list[FakeServer] = []

    async def start(*handlers: Any) -> FakeServer:
        fake = await FakeServer(*handlers).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.close()


async def _collect(stream: Any, n: int) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in stream:
            out.append(event)
            if len(out) == n:
                break
    return out


async def test_fatal_close_code_stops_with_a_clear_exception(fakes: Any) -> None:
    """A 4003 close after an error frame ends iteration with FatalCloseError carrying both; no reconnect."""

    async def script(ws: ServerConnection) -> None:
        await ws.send(hello())
        request = await fake.recv(ws)
        await ws.send(ack(request, [{"ch": "trades", "sym": "AAPL", "epoch": "E1", "seq": 1}]))
        await ws.send(snapshot("trades", 1))
        await ws.send(trades(2))
        await ws.send(frame({"type": "error", "code": "FORBIDDEN", "message": "your key was revoked", "fatal": True}))
        await ws.close(4003, "forbidden")

    fake = await fakes(script)
    async with connect(fake.url, backoff=FAST, proxy=None) as stream:
        await stream.subscribe(["AAPL"], channels=["trades"])
        with pytest.raises(FatalCloseError) as caught:
            async with asyncio.timeout(TIMEOUT):
                async for _ in stream:
                    pass
        with pytest.raises(FatalCloseError):
            await anext(stream)  # stays ended
        with pytest.raises(ClientError, match="closed"):
            await stream.subscribe(["AAPL"])
    error = caught.value
    assert error.code == 4003 and error.reason == "forbidden"
    assert error.error is not None and error.error.code == "FORBIDDEN"
    assert "4003" in str(error) and "your key was revoked" in str(error)
    assert stream.stats.events == 1 and fake.connections == 1


async def test_fatal_close_before_hello_raises_on_connect(fakes: Any) -> None:
    """A server that refuses the connection with 4003 makes entering the stream raise FatalCloseError."""

    async def script(ws: ServerConnection) -> None:
        await ws.close(4003, "forbidden")

    fake = await fakes(script)
    with pytest.raises(FatalCloseError, match="4003"):
        async with connect(fake.url, proxy=None):
            pass


async def test_other_protocol_version_is_refused(fakes: Any) -> None:
    """A hello announcing another protocol major version is a ServerProtocolError."""

    async def script(ws: ServerConnection) -> None:
        await ws.send(hello().replace("stockpush/1", "stockpush/2"))
        await ws.wait_closed()

    fake = await fakes(script)
    with pytest.raises(ServerProtocolError, match="stockpush/2"):
        async with connect(fake.url, proxy=None):
            pass


async def test_illegal_jump_is_resumed_in_band_and_duplicates_dropped(fakes: Any) -> None:
    """A gap triggers one resume from the last seq; replayed events fill it; duplicates never reach the consumer."""

    async def script(ws: ServerConnection) -> None:
        await ws.send(hello())
        request = await fake.recv(ws)
        ok = [
            {"ch": "trades", "sym": "AAPL", "epoch": "E1", "seq": 5},
            {"ch": "quotes", "sym": "AAPL", "epoch": "E1", "seq": 3},
        ]
        await ws.send(ack(request, ok))
        await ws.send(snapshot("trades", 5))
        await ws.send(snapshot("quotes", 3))
        await ws.send(trades(6))
        await ws.send(frame({"type": "data", "events": [_quote(7, prev_seq=3)]}))  # legal jump
        await ws.send(trades(9))  # 7 and 8 are missing
        await ws.send(trades(10))
        resume = await fake.recv(ws)
        replay = [{"ch": "trades", "sym": "AAPL", "epoch": "E1", "seq": 10, "recovered": True, "replayed": 4}]
        await ws.send(ack(resume, replay))
        await ws.send(trades(7, 8))
        await ws.send(trades(8, 9, 10))
        await ws.send(trades(11))
        await ws.wait_closed()

    fake = await fakes(script)
    async with connect(fake.url, proxy=None) as stream:
        await stream.subscribe(["AAPL"], channels=["trades", "quotes"])
        events = await _collect(stream, 9)
    assert [(e.ch, e.seq) for e in events] == [
        ("trades", 5), ("quotes", 3), ("trades", 6), ("quotes", 7),
        ("trades", 7), ("trades", 8), ("trades", 9), ("trades", 10), ("trades", 11),
    ]  # fmt: skip
    resume = fake.received[1]
    assert resume["streams"] == [{"ch": "trades", "sym": "AAPL", "epoch": "E1", "after_seq": 6}]
    stats = stream.stats
    assert (stats.gaps, stats.duplicates, stats.replayed, stats.events) == (1, 1, 4, 7)


def _closing(code: int, retry_after_ms: int | None = None) -> Any:
    async def first(ws: ServerConnection) -> None:
        await ws.send(hello())
        if retry_after_ms is not None:
            await ws.send(frame({"type": "error", "code": "RATE_LIMITED", "message": "slow down", "fatal": True,
                                 "retry_after_ms": retry_after_ms}))  # fmt: skip
        await ws.close(code, "test")

    return first


async def _idle(ws: ServerConnection) -> None:
    await ws.send(hello())
    await ws.wait_closed()


@pytest.mark.parametrize(
    ("code", "retry_after_ms", "backoff", "min_gap", "max_gap"),
    [
        pytest.param(4100, None, Backoff(initial_s=5.0, immediate_s=0.01), 0.0, 2.0, id="4100-at-once"),
        pytest.param(4200, 400, Backoff(initial_s=0.02), 0.4, TIMEOUT, id="4200-retry-after"),
        pytest.param(1013, 400, Backoff(initial_s=0.02), 0.4, TIMEOUT, id="1013-retry-after"),
        pytest.param(1012, None, Backoff(initial_s=0.8), 0.4, TIMEOUT, id="1012-backoff"),
        pytest.param(1011, None, Backoff(initial_s=0.8), 0.4, TIMEOUT, id="1011-backoff"),
    ],
)
async def test_reconnect_delay_follows_the_close_code_band(
    fakes: Any, code: int, retry_after_ms: int | None, backoff: Backoff, min_gap: float, max_gap: float
) -> None:
    """41xx reconnects at once; 42xx, 1012 and 1013 back off, honouring retry_after_ms; others back off too."""
    fake = await fakes(_closing(code, retry_after_ms), _idle)
    async with connect(fake.url, backoff=backoff, rng=lambda: 0.0, proxy=None) as stream:
        await wait_for(lambda: fake.connections == 2 and stream.connected, timeout=max_gap, what="a reconnect")
        gap = fake.opened[1] - fake.opened[0]
        assert min_gap <= gap < max_gap
        assert stream.stats.reconnects == 1 and stream.stats.connects == 2


async def test_silent_connection_is_declared_dead_after_three_heartbeats(fakes: Any) -> None:
    """No frame for 3 x heartbeat_ms (from hello): the client drops the connection and reconnects."""

    async def silent(ws: ServerConnection) -> None:
        await ws.send(hello(heartbeat_ms=100))
        await ws.wait_closed()

    async def talkative(ws: ServerConnection) -> None:
        await ws.send(hello(heartbeat_ms=100))
        while True:
            await ws.send(frame({"type": "heartbeat", "server_ts": 1}))
            await asyncio.sleep(0.05)

    fake = await fakes(silent, talkative)
    async with connect(fake.url, backoff=FAST, proxy=None) as stream:
        await wait_for(lambda: fake.connections == 2 and stream.connected, what="the watchdog to reconnect")
        assert fake.opened[1] - fake.opened[0] >= 0.3
        assert stream.stats.reconnects == 1


async def test_rate_limited_request_is_sent_again_after_retry_after(fakes: Any) -> None:
    """A subscribe answered with a non-fatal RATE_LIMITED is sent again after retry_after_ms, same id."""

    async def script(ws: ServerConnection) -> None:
        await ws.send(hello())
        first = await fake.recv(ws)
        await ws.send(frame({"type": "error", "id": first["id"], "code": "RATE_LIMITED", "message": "wait",
                             "fatal": False, "retry_after_ms": 100}))  # fmt: skip
        again = await fake.recv(ws)
        await ws.send(ack(again, [{"ch": "trades", "sym": "AAPL", "epoch": "E1", "seq": 1}]))
        await ws.wait_closed()

    fake = await fakes(script)
    loop = asyncio.get_running_loop()
    async with connect(fake.url, proxy=None) as stream:
        started = loop.time()
        result = await stream.subscribe(["AAPL"], channels=["trades"])
        assert loop.time() - started >= 0.1
    assert [e.sym for e in result.ok or []] == ["AAPL"]
    assert [m["id"] for m in fake.received] == [fake.received[0]["id"]] * 2


async def test_refused_request_raises_subscribe_error(fakes: Any) -> None:
    """A request answered with a non-fatal error other than RATE_LIMITED raises SubscribeError with it."""

    async def script(ws: ServerConnection) -> None:
        await ws.send(hello())
        request = await fake.recv(ws)
        await ws.send(frame({"type": "error", "id": request["id"], "code": "SUBSCRIPTION_LIMIT",
                             "message": "too many", "fatal": False, "count": 1, "limit": 1}))  # fmt: skip
        await ws.wait_closed()

    fake = await fakes(script)
    async with connect(fake.url, proxy=None) as stream:
        with pytest.raises(SubscribeError, match="too many") as caught:
            await stream.subscribe(["AAPL"])
    assert caught.value.error is not None and caught.value.error.limit == 1


def test_events_are_the_protocol_models() -> None:
    """The client hands over the protocol's own models, not copies of their fields."""
    from service import protocol

    names = ("TradeEvent", "QuoteEvent", "StatusEvent", "BarEvent", "SnapshotMessage", "ResetMessage")
    assert all(getattr(client_module, name) is getattr(protocol, name) for name in names)
