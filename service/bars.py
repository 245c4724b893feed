"""OHLCV bars aggregated from trades, per symbol and interval, on market time (event `ts`)."""

from __future__ import annotations

from typing import Any


class BarBuilder:
    """Builds one symbol's bars of one interval.

    The forming bar is published as it changes, at most once per tenth of the interval of
    market time (a 1-minute bar every 6 s), and once more with `final: true` when the
    interval is over. Intervals without trades produce no bar.
    """

    __slots__ = ("bar", "interval_ms", "last_update_ts", "min_gap_ms")

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.min_gap_ms = interval_ms // 10
        self.bar: dict[str, Any] | None = None
        self.last_update_ts = 0

    def close_if_due(self, ts: int) -> dict[str, Any] | None:
        """The final version of the forming bar, if market time `ts` is past its end."""
        bar = self.bar
        if bar is None or ts < bar["end_ts"]:
            return None
        self.bar = None
        return {**bar, "final": True}

    def add(self, ts: int, price: float, size: int) -> dict[str, Any] | None:
        """Fold a trade in; return the forming bar when it is time to publish it."""
        bar = self.bar
        if bar is None:
            start = ts - ts % self.interval_ms
            bar = self.bar = {
                "start_ts": start,
                "end_ts": start + self.interval_ms,
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "volume": size,
                "trades": 1,
                "final": False,
            }
            self.last_update_ts = ts
            return dict(bar)
        bar["high"] = max(bar["high"], price)
        bar["low"] = min(bar["low"], price)
        bar["close"] = price
        bar["volume"] += size
        bar["trades"] += 1
        if ts - self.last_update_ts >= self.min_gap_ms:
            self.last_update_ts = ts
            return dict(bar)
        return None
