"""stockpush record: a live stream saved in the generic trades format replays as it was."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from feeds.base import Quote, Tick, Trade
from feeds.replay import ReplayConfig
from service.record import record
from tests.helpers import Server


@pytest.mark.parametrize("name", ["live.csv", "live.csv.gz"])
async def test_record_then_replay_round_trip(server: Server, tmp_path: Path, name: str) -> None:
    """Recorded trades and quotes replay with the same times, prices and sizes the server sent."""
    out = tmp_path / name
    rows = await record(server.url, ["AAPL", "PENNY"], out, seconds=1.0)
    assert rows > 50

    config = ReplayConfig.model_validate(
        {"kind": "replay", "name": "r", "path": str(out), "format": "generic_trades", "speed": 0,
         "symbols": ["AAPL", {"symbol": "PENNY", "tick_size": "0.0001"}]}
    )  # fmt: skip
    feed = config.build()
    replayed: list[Tick] = []
    await asyncio.wait_for(feed.run(replayed.append), 10)
    trades = [t for t in replayed if isinstance(t, Trade)]
    quotes = [t for t in replayed if isinstance(t, Quote)]
    assert len(trades) + len(quotes) == rows

    # What the server published, straight from its replay window.
    ticks = {s.symbol: s.tick_size for s in feed.symbols()}
    sent: dict[tuple[str, int, int], dict[str, Any]] = {}
    for sym in ("AAPL", "PENNY"):
        stream = server.runtime.hub.streams[("trades", sym)]
        for event in server.runtime.bus.replay(("trades", sym), stream.epoch, 0):
            body = orjson.loads(event.wire)
            sent[(sym, body["ts"], body["seq"])] = body
    by_time: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for (sym, ts, _), body in sorted(sent.items()):
        by_time.setdefault((sym, ts), []).append(body)
    for trade in trades:
        candidates = by_time[(trade.symbol, trade.ts)]
        price = float(trade.price_ticks * ticks[trade.symbol])
        assert any(b["price"] == price and b["size"] == trade.size for b in candidates), (trade, candidates)
    assert {t.symbol for t in trades} == {"AAPL", "PENNY"}


async def test_record_command_line(server: Server, tmp_path: Path) -> None:
    """`stockpush record --seconds` writes a file with a header and rows, and says how many."""
    out = tmp_path / "cli.csv"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "record", "AAPL", "--url", server.url, "--out", str(out), "--seconds", "1",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.read_text().splitlines()
    assert lines[0] == "ts,symbol,price,size,bid,ask,bid_size,ask_size"
    assert len(lines) > 10
    assert f"{len(lines) - 1} rows" in err.decode()
