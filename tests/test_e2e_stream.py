"""End to end through real uvicorn: every server message and guarantees G1-G4."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import httpx
import pytest

from feeds.synthetic import SyntheticConfig
from tests.conftest import StartServer
from tests.helpers import SequenceChecker, Server, make_settings, open_client, recv, send, subscribed, until


@pytest.fixture(params=["direct", "asgi"])
def writer(request: pytest.FixtureRequest) -> str:
    """Every test here runs with both writers (see tests/conftest.py)."""
    return str(request.param)


async def test_server_speaks_first_with_hello(server: Server) -> None:
    """The first frame is hello with protocol, limits, channel kinds and every symbol."""
    ws = await open_client(server)
    hello = await recv(ws)
    assert hello["type"] == "hello"
    assert hello["protocol"] == "stockpush/1"
    assert hello["heartbeat_ms"] == 300
    assert hello["channels"] == {
        "trades": "event",
        "quotes": "state",
        "status": "state",
        "bars.1s": "state",
        "bars.1m": "state",
    }
    assert hello["symbols"] == sorted(server.runtime.sequencer.symbols)
    assert hello["limits"]["max_frame_bytes"] == 65536
    assert hello["limits"]["max_subscriptions"] == server.settings.stream.max_subscriptions
    assert abs(hello["server_ts"] - server.runtime.hub.now_ms()) < 60_000
    await ws.close()


async def test_subscribe_acks_then_snapshots_then_data(server: Server) -> None:
    """Subscribe (lower-case symbols) gets an ack echoing the id, a snapshot per stream, then data (G2, G3)."""
    ws, ack = await subscribed(server, symbols=["aapl", "msft"])
    assert ack["op"] == "subscribe"
    assert ack["failed"] == []
    assert {(o["ch"], o["sym"]) for o in ack["ok"]} == {
        (ch, sym) for ch in ("trades", "quotes") for sym in ("AAPL", "MSFT")
    }
    assert ack["subscriptions"] == {"trades": ["AAPL", "MSFT"], "quotes": ["AAPL", "MSFT"]}
    checker = SequenceChecker()
    snapshots: dict[tuple[str, str], dict[str, Any]] = {}
    while checker.events < 200:
        message = await recv(ws)
        assert message["type"] in ("snapshot", "data", "heartbeat"), message
        if message["type"] == "snapshot":
            snapshots[(message["ch"], message["sym"])] = message
        if message["type"] == "data":
            for event in message["events"]:
                # G2: no data of a stream before its snapshot
                assert (event["ch"], event["sym"]) in snapshots
        checker.feed(message)
    assert checker.violations == []
    assert len(snapshots) == 4
    snapshot = snapshots[("quotes", "AAPL")]
    quote = snapshot["data"]
    assert quote["price_decimals"] == 2 and "prev_close" in quote
    # The latest quote's fields once there is one; a stream with no event yet (seq 0) has
    # only the day's statistics (the feed may not have quoted AAPL when we subscribed).
    assert ("bid" in quote) == (snapshot["seq"] > 0)
    await ws.close()


async def test_snapshot_seq_stitches_to_next_event(server: Server) -> None:
    """G3: for every stream the first data event after the snapshot has seq = snapshot.seq + 1."""
    ws, ack = await subscribed(server, symbols=["*"])
    expected = {(o["ch"], o["sym"]): o["seq"] for o in ack["ok"]}
    snap_seq: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], int] = {}
    async with asyncio.timeout(10):
        while len(first) < len(expected):
            message = await recv(ws)
            if message["type"] == "snapshot":
                snap_seq[(message["ch"], message["sym"])] = message["seq"]
            elif message["type"] == "data":
                for event in message["events"]:
                    first.setdefault((event["ch"], event["sym"]), event["seq"])
    assert snap_seq == expected
    assert all(first[key] == snap_seq[key] + 1 for key in first)
    await ws.close()


async def test_events_carry_wire_fields_rounded_to_the_tick(server: Server) -> None:
    """Trades and quotes carry the documented fields; prices sit on the tick grid; ts is int ms."""
    ws, _ = await subscribed(server, symbols=["AAPL", "PENNY"])
    seen: set[tuple[str, str]] = set()
    async with asyncio.timeout(10):
        while len(seen) < 4:
            message = await recv(ws)
            if message["type"] != "data":
                continue
            for event in message["events"]:
                seen.add((event["ch"], event["sym"]))
                assert isinstance(event["ts"], int) and isinstance(event["seq"], int)
                decimals = 4 if event["sym"] == "PENNY" else 2
                prices = [event["price"]] if event["ch"] == "trades" else [event["bid"], event["ask"]]
                for price in prices:
                    assert round(price, decimals) == price
                    assert len(repr(price).split(".")[-1]) <= decimals
                if event["ch"] == "quotes":
                    assert event["bid"] < event["ask"]
                    assert event["bid_size"] > 0 and event["ask_size"] > 0
                else:
                    assert event["size"] > 0
    await ws.close()


async def test_unsubscribe_is_a_barrier(server: Server) -> None:
    """G2: after the unsubscribe ack no event of those streams arrives; others continue."""
    ws, _ = await subscribed(server, symbols=["AAPL", "MSFT"])
    await until(ws, lambda m: m["type"] == "data")
    await send(ws, {"op": "unsubscribe", "id": "u1", "symbols": ["AAPL"]})
    ack, _ = await until(ws, lambda m: m["type"] == "ack" and m.get("id") == "u1")
    assert {(o["ch"], o["sym"]) for o in ack["ok"]} == {("trades", "AAPL"), ("quotes", "AAPL")}
    assert ack["subscriptions"] == {"trades": ["MSFT"], "quotes": ["MSFT"]}
    msft = 0
    while msft < 50:
        message = await recv(ws)
        if message["type"] == "data":
            assert all(e["sym"] == "MSFT" for e in message["events"]), message
            msft += len(message["events"])
    await send(ws, {"op": "unsubscribe", "id": "u2", "all": True})
    ack, _ = await until(ws, lambda m: m["type"] == "ack" and m.get("id") == "u2")
    assert ack["subscriptions"] == {} and ack["count"] == 0
    # Nothing but heartbeats from now on.
    for _ in range(3):
        assert (await recv(ws))["type"] == "heartbeat"
    await ws.close()


async def test_subscriptions_and_ping(server: Server) -> None:
    """`subscriptions` lists the current set; `ping` gets a pong echoing id and client_ts."""
    ws, _ = await subscribed(server, channels=["quotes"], symbols=["NVDA"])
    await send(ws, {"op": "subscriptions", "id": 9})
    ack, _ = await until(ws, lambda m: m["type"] == "ack" and m.get("id") == 9)
    assert ack["op"] == "subscriptions"
    assert ack["subscriptions"] == {"quotes": ["NVDA"]}
    await send(ws, {"op": "ping", "id": "p", "client_ts": 1234.5})
    pong, _ = await until(ws, lambda m: m["type"] == "pong")
    assert pong["id"] == "p" and pong["client_ts"] == 1234.5 and isinstance(pong["server_ts"], int)
    await ws.close()


async def test_heartbeat_when_idle(server: Server) -> None:
    """With nothing else to send, a heartbeat arrives every heartbeat_ms."""
    ws = await open_client(server)
    await recv(ws)  # hello
    loop = asyncio.get_running_loop()
    start = loop.time()
    beats = [await recv(ws, timeout=2) for _ in range(2)]
    assert [b["type"] for b in beats] == ["heartbeat", "heartbeat"]
    assert loop.time() - start >= 0.5  # two intervals of 300 ms
    await ws.close()


async def test_every_event_exactly_once_across_many_streams(start_server: StartServer) -> None:
    """G1: with 40 streams at full speed, every stream is gap-free and duplicate-free."""
    server = await start_server(symbols=20, interval_ms=2)
    ws, _ = await subscribed(server, symbols=["*"])
    checker = SequenceChecker()
    while checker.events < 3000:
        checker.feed(await recv(ws))
    assert checker.violations == []
    await ws.close()


async def _read_until_seq(ws: Any, checker: SequenceChecker, count: int) -> None:
    while checker.events < count:
        checker.feed(await recv(ws))


async def test_resume_after_reconnect_is_gap_free(server: Server) -> None:
    """G4: reconnecting with the resume form yields exactly the missed events, then live ones."""
    ws, _ = await subscribed(server, symbols=["AAPL", "MSFT"])
    checker = SequenceChecker()
    await _read_until_seq(ws, checker, 100)
    await ws.close()
    positions = dict(checker.last)
    # Let the feed move on while we are away.
    target = max(seq for _, seq in positions.values()) + 50
    async with asyncio.timeout(10):
        while min(server.runtime.hub.streams[key].seq for key in positions) < target:
            await asyncio.sleep(0.01)

    ws2, ack = await subscribed(
        server,
        streams=[
            {"ch": ch, "sym": sym, "epoch": epoch, "after_seq": seq} for (ch, sym), (epoch, seq) in positions.items()
        ],
    )
    for entry in ack["ok"]:
        assert entry["recovered"] is True, entry
        assert entry["replayed"] == entry["seq"] - positions[(entry["ch"], entry["sym"])][1]
        assert entry["replayed"] >= 50
    checker2 = SequenceChecker()
    checker2.last = positions
    await _read_until_seq(ws2, checker2, sum(e["replayed"] for e in ack["ok"]) + 100)
    assert checker2.violations == []
    await ws2.close()


async def test_resume_outside_window_or_epoch_gives_snapshot(start_server: StartServer) -> None:
    """G4: too old or another epoch → recovered:false with a reason, then a fresh snapshot."""
    server = await start_server(stream={"replay_window": 20})
    ws, ack = await subscribed(server, symbols=["AAPL"], channels=["trades"])
    epoch = ack["ok"][0]["epoch"]
    async with asyncio.timeout(10):
        while server.runtime.hub.streams[("trades", "AAPL")].seq < 40:
            await asyncio.sleep(0.01)
    await ws.close()
    ws2, ack = await subscribed(
        server,
        streams=[
            {"ch": "trades", "sym": "AAPL", "epoch": epoch, "after_seq": 1},
            {"ch": "quotes", "sym": "AAPL", "epoch": "not-the-epoch", "after_seq": 1},
            {"ch": "trades", "sym": "ZZZZ", "epoch": epoch, "after_seq": 1},
        ],
    )
    by_ch = {o["ch"]: o for o in ack["ok"]}
    assert by_ch["trades"]["recovered"] is False and by_ch["trades"]["reason"] == "TOO_OLD"
    assert by_ch["quotes"]["recovered"] is False and by_ch["quotes"]["reason"] == "EPOCH_CHANGED"
    assert [f["code"] for f in ack["failed"]] == ["UNKNOWN_SYMBOL"]
    checker = SequenceChecker()
    snaps: list[dict[str, Any]] = []
    while len(snaps) < 2 or checker.events < 30:
        message = await recv(ws2)
        if message["type"] == "snapshot":
            snaps.append(message)
        checker.feed(message)
    assert {(s["ch"], s["seq"] == by_ch[s["ch"]]["seq"]) for s in snaps} == {("trades", True), ("quotes", True)}
    assert checker.violations == []
    await ws2.close()


async def test_sequence_numbers_are_shared_by_all_clients(server: Server) -> None:
    """seq is assigned once at the source: two clients see the same seq for the same event."""
    a, _ = await subscribed(server, channels=["trades"], symbols=["TSLA"])
    b, _ = await subscribed(server, channels=["trades"], symbols=["TSLA"])

    async def collect(ws: Any) -> dict[int, tuple[float, int]]:
        out: dict[int, tuple[float, int]] = {}
        while len(out) < 60:
            message = await recv(ws)
            if message["type"] == "data":
                for e in message["events"]:
                    out[e["seq"]] = (e["price"], e["ts"])
        return out

    seen_a, seen_b = await asyncio.gather(collect(a), collect(b))
    common = set(seen_a) & set(seen_b)
    assert len(common) >= 30
    assert all(seen_a[s] == seen_b[s] for s in common)
    await a.close()
    await b.close()


async def test_many_clients_get_paced_frames_without_gaps(start_server: StartServer) -> None:
    """Past the frame budget, clients get one frame per beat holding every event since the last."""
    settings = make_settings(stream={"max_frames_per_s": 100, "pace_ms": 40, "max_pace_ms": 80})
    feed = {"name": "load", "kind": "synthetic", "symbols": 4, "rate": 400, "burst_ms": 1}
    server = await start_server(settings.model_copy(update={"feeds": [SyntheticConfig.model_validate(feed)]}))
    clients = [(await subscribed(server, symbols=["*"], channels=["trades"]))[0] for _ in range(2)]
    checkers = [SequenceChecker() for _ in clients]

    async def read(ws: Any, checker: SequenceChecker) -> int | None:
        """Events in the next message if it is a data frame."""
        message = await recv(ws)
        checker.feed(message)
        return len(message["events"]) if message["type"] == "data" else None

    async with httpx.AsyncClient() as http:
        # The pacer notices the connections within 50 ms; until then every event goes at once.
        while (await http.get(f"{server.http}/healthz")).json()["pace_ms"] == 0:
            for ws, checker in zip(clients, checkers, strict=True):
                await read(ws, checker)
        sizes: list[list[int]] = [[], []]
        while min(map(len, sizes)) < 30:
            for ws, checker, seen in zip(clients, checkers, sizes, strict=True):
                if (count := await read(ws, checker)) is not None:
                    seen.append(count)
        health = (await http.get(f"{server.http}/healthz")).json()
    assert 40 <= health["pace_ms"] <= 80
    assert all(checker.violations == [] for checker in checkers)
    # 400 trades/s in 1 ms bursts on 40-80 ms beats: 16-32 events per frame once frames
    # queued before pacing began are read (unpaced: one event per frame).
    for seen in sizes:
        assert statistics.median(seen[15:]) >= 8, seen
    for ws in clients:
        await ws.close()
