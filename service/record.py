"""`stockpush record`: save a live stream in the generic trades format, so it can be replayed.

Trades and quotes of the chosen symbols are written as they arrive, one CSV row each
(feeds/recording.py); a `.gz` name writes gzip. The file replays with a `replay` feed of
format `generic_trades`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from websockets.asyncio.client import connect

from feeds.base import Quote, SymbolSpec, Trade
from feeds.recording import TradesWriter


def _http_base(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def _specs(ws_url: str, symbols: Sequence[str]) -> list[SymbolSpec]:
    async with httpx.AsyncClient(base_url=_http_base(ws_url), timeout=10) as http:
        body = (await http.get("/api/v1/symbols")).json()
    wanted = {s.upper() for s in symbols}
    out = []
    for entry in body["symbols"]:
        if "*" in wanted or entry["symbol"] in wanted:
            tick = Decimal(str(entry["tick_size"]))
            out.append(SymbolSpec(entry["symbol"], tick, 1))
    return out


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "wt", newline="")
    return path.open("w", newline="")


async def record(url: str, symbols: Sequence[str], out: Path, seconds: float | None = None) -> int:
    """Record until `seconds` have passed (or forever); return the number of rows written."""
    specs = await _specs(url, symbols)
    if not specs:
        raise ValueError(f"none of {', '.join(symbols)} is published by {url}")
    ticks = {spec.symbol: spec.tick_size for spec in specs}
    rows = 0
    with _open(out) as handle:
        writer = TradesWriter(handle, specs)

        def units(sym: str, price: float) -> int:
            return int((Decimal(str(price)) / ticks[sym]).to_integral_value())

        def write(event: dict[str, Any]) -> None:
            nonlocal rows
            sym = event["sym"]
            if event["ch"] == "trades":
                writer.write(Trade(sym, event["ts"], units(sym, event["price"]), event["size"]))
            else:
                bid, ask = units(sym, event["bid"]), units(sym, event["ask"])
                writer.write(Quote(sym, event["ts"], bid, event["bid_size"], ask, event["ask_size"]))
            rows += 1

        async with connect(url, proxy=None, max_size=None) as ws:
            subscribe = {"op": "subscribe", "symbols": [s.symbol for s in specs], "snapshot": False}
            await ws.send(orjson.dumps(subscribe).decode())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    async for raw in ws:
                        message = orjson.loads(raw)
                        if message.get("type") == "data":
                            for event in message["events"]:
                                if event["ch"] in ("trades", "quotes"):
                                    write(event)
                        elif message.get("type") == "error" and message.get("fatal"):
                            print(f"stockpush record: server closed: {message['message']}", file=sys.stderr)
                            break
    return rows
