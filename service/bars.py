"""OHLCV bars aggregated from trades, per symbol and interval, on market time (event `ts`)."""

from __future__ import annotations

from typing import Any


class BarBuilder:
    """Builds one symbol's bars of one interval.

    The forming bar is published as it changes, at most once per tenth of the interval of
    market time (a 1-minute bar every 6 s), and once more with `final: true` when the
    interval is over. Intervals without trades produce no bar. Folding a trade in touches
    a few attributes; a dict is built only when a bar is published.
    """

    __slots__ = ("close", "end", "high", "interval_ms", "last_update_ts", "low", "min_gap_ms", "open", "start",
                 "trades", "volume")  # fmt: skip

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.min_gap_ms = interval_ms // 10
        self.start = self.end = -1  # no bar forming
        self.open = self.high = self.low = self.close = 0.0
        self.volume = self.trades = 0
        self.last_update_ts = 0

    def _bar(self, final: bool) -> dict[str, Any]:
        return {
            "start_ts": self.start,
            "end_ts": self.end,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "trades": self.trades,
            "final": final,
        }

    def close_if_due(self, ts: int) -> dict[str, Any] | None:
        """The final version of the forming bar, if market time `ts` is past its end."""
        return self.finish() if 0 <= self.end <= ts else None

    def finish(self) -> dict[str, Any]:
        """The final version of the forming bar; call when market time reaches `end` (>= 0)."""
        bar = self._bar(True)
        self.start = self.end = -1
        return bar

    def add(self, ts: int, price: float, size: int) -> dict[str, Any] | None:
        """Fold a trade in; return the forming bar when it is time to publish it."""
        if self.end < 0:
            self.start = ts - ts % self.interval_ms
            self.end = self.start + self.interval_ms
            self.open = self.high = self.low = self.close = price
            self.volume = size
            self.trades = 1
            self.last_update_ts = ts
            return self._bar(False)
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += size
        self.trades += 1
        if ts - self.last_update_ts >= self.min_gap_ms:
            self.last_update_ts = ts
            return self._bar(False)
        return None
