"""Writes ticks in the `generic_trades` format, so a recorded stream replays as it was.

One row per trade (`ts,symbol,price,size`) and one per quote (`ts,symbol,,,bid,ask,bid_size,
ask_size`). Prices are written exactly, as decimal strings of the symbol's tick grid, and
times as ISO-8601 UTC with milliseconds. Gzip the file by giving `gzip.open(..., "wt")`.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO

from feeds.base import Quote, SymbolSpec, Tick, Trade

COLUMNS = ("ts", "symbol", "price", "size", "bid", "ask", "bid_size", "ask_size")


def iso_ms(ts_ms: int) -> str:
    """Unix ms as '2025-03-03T14:30:00.123Z'."""
    moment = datetime.fromtimestamp(ts_ms // 1000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


class TradesWriter:
    """Appends trades and quotes to a text stream; Status and NewDay are not recorded."""

    def __init__(self, out: IO[str], specs: list[SymbolSpec], *, header: bool = True) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._ticks = {spec.symbol: spec.tick_size for spec in specs}
        if header:
            self._writer.writerow(COLUMNS)

    def _price(self, symbol: str, units: int) -> str:
        return str(Decimal(units) * self._ticks[symbol])

    def write(self, tick: Tick) -> None:
        if isinstance(tick, Trade):
            self._writer.writerow(
                (iso_ms(tick.ts), tick.symbol, self._price(tick.symbol, tick.price_ticks), tick.size, "", "", "", "")
            )
        elif isinstance(tick, Quote):
            self._writer.writerow(
                (
                    iso_ms(tick.ts),
                    tick.symbol,
                    "",
                    "",
                    self._price(tick.symbol, tick.bid_ticks),
                    self._price(tick.symbol, tick.ask_ticks),
                    tick.bid_size,
                    tick.ask_size,
                )
            )
