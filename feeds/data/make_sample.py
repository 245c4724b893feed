"""Writes the shipped replay sample: one simulated regular session as Polygon-style minute bars.

    python -m feeds.data.make_sample

The data come from our own `market` simulation with a fixed seed, for two fictional
companies, so the file can ship with the project (no vendor licence) and regenerating it
gives the same bytes. The format is Polygon's `minute_aggs_v1` (window_start in Unix ns,
rows sorted by ticker, then time), so the replay feed's bar path is exercised by default.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from feeds.base import Tick, Trade
from feeds.market_config import MarketConfig

SAMPLE = Path(__file__).with_name("sample-minute-aggs.csv.gz")
_SESSION = {
    "kind": "market",
    "name": "sample",
    "seed": 20250303,
    "start": "2025-03-03T09:30:00-05:00",
    "calendar": {"sessions": {"pre": None, "post": None}},
    "factors": {"market": {"volatility": 0.16}},
    "defaults": {"trades_per_sec": 1.5, "quotes_per_trade": 0},
    "symbols": [
        {"symbol": "ACME", "name": "Acme Corp.", "price": 48.20, "volatility": 0.35, "loadings": {"market": 1.2}},
        {"symbol": "INIT", "name": "Initech Inc.", "price": 12.85, "volatility": 0.45, "loadings": {"market": 0.9}},
    ],
}
_COLUMNS = ("ticker", "volume", "open", "close", "high", "low", "window_start", "transactions")


def minute_bars() -> list[tuple[str, int, str, str, str, str, int, int]]:
    """One regular session of the simulation, aggregated into minute bars."""
    feed = MarketConfig.model_validate(_SESSION).build()
    sim = feed.simulation()
    ticks: list[Tick] = []
    sim.start(ticks.append)
    sim.advance(sim.now + 6.5 * 3600, ticks.append)
    units = {spec.symbol: spec.tick_size for spec in feed.symbols()}
    bars: dict[tuple[str, int], list[int]] = {}  # (symbol, minute ms) -> o, h, l, c, volume, count
    for tick in ticks:
        if not isinstance(tick, Trade):
            continue
        key = (tick.symbol, tick.ts - tick.ts % 60_000)
        bar = bars.get(key)
        if bar is None:
            bars[key] = [tick.price_ticks, tick.price_ticks, tick.price_ticks, tick.price_ticks, tick.size, 1]
        else:
            bar[1] = max(bar[1], tick.price_ticks)
            bar[2] = min(bar[2], tick.price_ticks)
            bar[3] = tick.price_ticks
            bar[4] += tick.size
            bar[5] += 1
    rows = []
    for (symbol, minute), (o, h, low, c, volume, count) in sorted(bars.items()):
        unit = units[symbol]
        o_, c_, h_, l_ = (str(p * unit) for p in (o, c, h, low))
        rows.append((symbol, volume, o_, c_, h_, l_, minute * 1_000_000, count))
    return rows


def main() -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_COLUMNS)
    writer.writerows(minute_bars())
    # mtime=0 and no file name in the header: the same data give the same bytes.
    with SAMPLE.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
        out.write(text.getvalue().encode())
    print(f"wrote {SAMPLE} ({SAMPLE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
