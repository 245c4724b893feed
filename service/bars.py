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
        self.merge(price, price, price, size, 1)
        if ts - self.last_update_ts >= self.min_gap_ms:
            self.last_update_ts = ts
            return self._bar(False)
        return None

    def merge(self, high: float, low: float, close: float, volume: int, trades: int) -> None:
        """Fold in trades summed elsewhere (see Bars); a bar must be forming."""
        if high > self.high:
            self.high = high
        if low < self.low:
            self.low = low
        self.close = close
        self.volume += volume
        self.trades += trades

    def due(self) -> int:
        """Market time from which a trade or tick makes this builder publish or close."""
        if self.end < 0:
            return 0  # the next trade opens a bar
        return min(self.end, self.last_update_ts + self.min_gap_ms)


class Bars:
    """Every bar interval of one symbol, fed through one accumulator.

    Most trades change no published bar: they only move the forming bars' high, low,
    close and volume. Such trades are summed once here, not once per interval; the
    builders take the sum in whenever one of them has something to publish or close
    (market time reaches `due`), so what they publish is exactly what folding each trade
    into each of them would give.
    """

    __slots__ = ("builders", "close", "due", "high", "low", "trades", "volume")

    def __init__(self, intervals: dict[str, int]) -> None:
        self.builders = [(ch, BarBuilder(interval)) for ch, interval in intervals.items()]
        self.due = 0
        self.trades = 0  # summed since the builders last took them in
        self.high = self.low = self.close = 0.0
        self.volume = 0

    def add(self, ts: int, price: float, size: int) -> list[tuple[str, dict[str, Any]]] | None:
        """Fold a trade in; the forming bars to publish now, if any."""
        if ts < self.due:
            if self.trades:
                if price > self.high:
                    self.high = price
                elif price < self.low:
                    self.low = price
                self.volume += size
                self.trades += 1
            else:
                self.high = self.low = price
                self.volume = size
                self.trades = 1
            self.close = price
            return None
        self._hand_over()
        updates = []
        for ch, builder in self.builders:
            bar = builder.add(ts, price, size)
            if bar is not None:
                updates.append((ch, bar))
        self.due = min(builder.due() for _, builder in self.builders)
        return updates

    def close_due(self, ts: int) -> list[tuple[str, dict[str, Any]]]:
        """The final bars of intervals that market time `ts` has ended; call when ts >= due."""
        self._hand_over()
        finals = [(ch, builder.finish()) for ch, builder in self.builders if 0 <= builder.end <= ts]
        self.due = min(builder.due() for _, builder in self.builders)
        return finals

    def _hand_over(self) -> None:
        if self.trades:
            for _, builder in self.builders:
                builder.merge(self.high, self.low, self.close, self.volume, self.trades)
            self.trades = 0
