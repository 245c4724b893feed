"""End to end: status and bars channels, the bars history endpoint, and throttle_ms."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import httpx

from tests.helpers import SequenceChecker, Server, recv, subscribed


async def test_status_snapshot_and_bars_stream(server: Server) -> None:
    """status says the market is open; bars.1s events are OHLC-consistent and end in finals, gap-free."""
    ws, ack = await subscribed(server, channels=["status", "bars.1s"], symbols=["AAPL"])
    assert ack["failed"] == []
    checker = SequenceChecker()
    status = None
    finals = []
    async with asyncio.timeout(15):
        while len(finals) < 3:
            message = await recv(ws)
            checker.feed(message)
            if message["type"] == "snapshot" and message["ch"] == "status":
                status = message["data"]["status"]
            if message["type"] == "data":
                for e in message["events"]:
                    if e["ch"] == "bars.1s":
                        assert e["low"] <= min(e["open"], e["close"]) <= max(e["open"], e["close"]) <= e["high"]
                        assert e["end_ts"] - e["start_ts"] == 1000
                        if e["final"]:
                            finals.append(e)
    assert status == "open"
    assert checker.violations == []
    assert [b["start_ts"] for b in finals] == sorted({b["start_ts"] for b in finals})
    await ws.close()


async def test_bars_history_endpoint(server: Server) -> None:
    """GET /api/v1/bars returns final bars oldest first (plus the forming one) and validates its input."""
    async with asyncio.timeout(15):
        while len(server.runtime.hub.bars[("bars.1s", "MSFT")]) < 3:
            await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=server.http) as http:
        body = (await http.get("/api/v1/bars", params={"symbol": "msft", "interval": "1s", "limit": 2})).json()
        bad_interval = await http.get("/api/v1/bars", params={"symbol": "MSFT", "interval": "5m"})
        unknown = await http.get("/api/v1/bars", params={"symbol": "NOPE"})
        bad_limit = await http.get("/api/v1/bars", params={"symbol": "MSFT", "limit": "lots"})
    assert body["symbol"] == "MSFT"
    assert body["interval"] == "1s"
    assert len(body["bars"]) == 2
    assert body["bars"][0]["start_ts"] < body["bars"][1]["start_ts"]
    assert body["bars"][0]["final"] is True
    assert body["price_decimals"] == 2
    assert bad_interval.status_code == 400
    assert "interval" in bad_interval.json()["error"]["message"]
    assert unknown.status_code == 404
    assert bad_limit.status_code == 400


async def test_throttle_ms_limits_state_updates_per_stream(server: Server) -> None:
    """With throttle_ms, each quote stream gets at most about one update per interval, jumps marked by prev_seq."""
    ws, _ = await subscribed(server, channels=["quotes"], symbols=["*"], throttle_ms=200)
    checker = SequenceChecker()
    counts: dict[str, int] = defaultdict(int)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 1.0:
        message = await recv(ws)
        checker.feed(message)
        if message["type"] == "data":
            for e in message["events"]:
                counts[e["sym"]] += 1
    elapsed = loop.time() - started
    assert checker.violations == []
    assert counts  # updates do flow
    # The feed makes ~180 quotes per second per symbol here; throttled, at most one per 200 ms.
    assert max(counts.values()) <= elapsed / 0.2 + 2
    produced = server.runtime.hub.streams[("quotes", "AAPL")].seq
    assert produced > 5 * counts["AAPL"]
    await ws.close()
