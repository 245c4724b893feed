"""Turns feed ticks into sequenced, encoded events: the one place where `seq` is assigned.

Per stream (channel, symbol) it keeps an epoch and the last seq; per symbol the day
statistics. Each event is encoded to JSON once, here, and the same string is sent to every
subscriber.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import orjson

from feeds.base import STATUSES, NewDay, Quote, Status, SymbolSpec, Tick, Trade
from service.bars import Bars
from service.events import (
    BAR_CHANNELS,
    CHANNEL_KINDS,
    FROM_WIRE,
    QUOTES,
    STATUS,
    TRADES,
    BusMessage,
    Event,
    StreamKey,
    StreamRemoved,
    StreamReset,
)

log = logging.getLogger(__name__)

_new_event = partial(tuple.__new__, Event)

REGULAR = frozenset({"open", None})


def new_epoch() -> str:
    """An opaque epoch: start time plus randomness, so two processes never share one."""
    return f"{int(time.time()):x}-{secrets.token_hex(4)}"


class _Stream:
    """Sequencing state of one stream, with its wire prefix rendered once."""

    __slots__ = ("ch", "epoch", "key", "prefix", "seq", "sym")

    def __init__(self, ch: str, sym: str, epoch: str) -> None:
        self.ch = ch
        self.sym = sym
        self.key: StreamKey = (ch, sym)
        self.epoch = epoch
        self.seq = 0
        self.prefix = orjson.dumps({"ch": ch, "sym": sym}).decode()[:-1] + ',"seq":'


# Prices rendered per symbol, reused while the price stays in range: most trades print at a
# price seen moments ago, and a lookup is several times cheaper than round() plus repr().
_PRICE_CACHE = 4096


class _Symbol:
    __slots__ = ("bars", "decimals", "prices", "scale", "spec", "stats", "streams", "trades")

    def __init__(self, spec: SymbolSpec, epoch: str) -> None:
        self.spec = spec
        self.decimals = spec.price_decimals
        self.scale = float(spec.tick_size)
        self.bars = Bars(BAR_CHANNELS)
        self.streams = {ch: _Stream(ch, spec.symbol, epoch) for ch in CHANNEL_KINDS}
        self.trades = self.streams[TRADES]
        self.prices: dict[int, tuple[float, str]] = {}  # price in ticks -> (price, its JSON)
        # Updated in place: the hub always shows the current day statistics in snapshots.
        self.stats: dict[str, Any] = {
            "open": None,
            "high": None,
            "low": None,
            "last": None,
            "prev_close": self.price(spec.prev_close_ticks),
            "volume": 0,
            "price_decimals": self.decimals,
            "status": None,
        }

    def price(self, ticks: int) -> float:
        # round() to the tick's decimals gives the shortest float repr: 101.3, not 101.30000000000001
        return round(ticks * self.scale, self.decimals)

    def rendered(self, ticks: int) -> tuple[float, str]:
        """The price and its JSON text (repr() of the rounded float is what orjson writes)."""
        prices = self.prices
        if len(prices) >= _PRICE_CACHE:
            prices.clear()
        price = round(ticks * self.scale, self.decimals)
        entry = prices[ticks] = (price, repr(price))
        return entry


class Sequencer:
    def __init__(self, publish_many: Callable[[list[BusMessage]], None]) -> None:
        self._publish_many = publish_many
        # What was sequenced and not yet published: a tick's events, or a whole burst's.
        self._out: list[BusMessage] = []
        self._publish = self._out.append
        self._symbols: dict[str, _Symbol] = {}

    @property
    def symbols(self) -> dict[str, SymbolSpec]:
        return {sym: s.spec for sym, s in self._symbols.items()}

    def register(self, specs: Iterable[SymbolSpec]) -> None:
        """Start the streams of new symbols at seq 0 in a fresh epoch."""
        epoch = new_epoch()
        for spec in specs:
            if spec.symbol in self._symbols:
                raise ValueError(f"symbol {spec.symbol} is already published by another feed")
            symbol = self._symbols[spec.symbol] = _Symbol(spec, epoch)
            for ch in CHANNEL_KINDS:
                self._publish(StreamReset(ch, spec.symbol, epoch, "START", symbol.stats))
        self._flush()

    def replace(self, specs: Iterable[SymbolSpec], reason: str) -> None:
        """Re-register symbols with new specs (tick size, previous close): a new epoch each."""
        epoch = new_epoch()
        for spec in specs:
            symbol = self._symbols[spec.symbol] = _Symbol(spec, epoch)
            for ch in CHANNEL_KINDS:
                self._publish(StreamReset(ch, spec.symbol, epoch, reason, symbol.stats))
        self._flush()

    def unregister(self, symbols: Iterable[str], reason: str) -> None:
        """Stop publishing symbols: their streams are removed for subscribers."""
        for sym in symbols:
            if self._symbols.pop(sym, None) is not None:
                for ch in CHANNEL_KINDS:
                    self._publish(StreamRemoved(ch, sym, reason))
        self._flush()

    def reset(self, symbols: Iterable[str], reason: str) -> None:
        """Give the symbols' streams a new epoch: their history is gone for subscribers."""
        epoch = new_epoch()
        for sym in symbols:
            symbol = self._symbols[sym]
            for ch, stream in symbol.streams.items():
                stream.epoch, stream.seq = epoch, 0
                self._publish(StreamReset(ch, sym, epoch, reason, symbol.stats))
        self._flush()
        log.info("Streams of %s restart in epoch %s (%s)", ", ".join(symbols), epoch, reason)

    def on_tick(self, tick: Tick) -> None:
        """Sequence one tick and publish what it made."""
        self._sequence(tick)
        self._flush()

    __call__ = on_tick  # a sequencer is what feeds emit to

    def burst(self, ticks: Iterable[Tick]) -> None:
        """Sequence ticks that happened together and publish them as one burst.

        The bus and the hub then take the burst in one call each, instead of one per event.
        """
        try:
            for tick in ticks:
                self._sequence(tick)
        finally:
            self._flush()  # what was sequenced before a failure has its seqs: it goes out

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._publish = self._out.append
            self._publish_many(out)

    def _sequence(self, tick: Tick) -> None:
        symbol = self._symbols.get(tick.symbol)
        if symbol is None:
            log.warning("Dropped a tick for unregistered symbol %r (feed bug)", tick.symbol)
            return
        ts = tick.ts
        if ts >= symbol.bars.due:
            for ch, bar in symbol.bars.close_due(ts):
                self._emit(ch, symbol, ts, bar)
        if type(tick) is Trade:
            self._on_trade(symbol, tick)
        elif isinstance(tick, Quote):
            if not 0 < tick.bid_ticks < tick.ask_ticks or tick.bid_size <= 0 or tick.ask_size <= 0:
                log.warning("Dropped a crossed or empty quote %r (feed bug)", tick)
                return
            fields = {
                "bid": symbol.price(tick.bid_ticks),
                "bid_size": tick.bid_size,
                "ask": symbol.price(tick.ask_ticks),
                "ask_size": tick.ask_size,
            }
            self._emit(QUOTES, symbol, ts, fields)
        elif isinstance(tick, Status):
            if tick.status not in STATUSES:
                log.warning("Dropped an unknown status %r (feed bug)", tick)
                return
            symbol.stats["status"] = tick.status
            self._emit_status(symbol, ts, tick.reason)
        elif isinstance(tick, NewDay):
            symbol.stats.update(
                open=None, high=None, low=None, volume=0, prev_close=symbol.price(tick.prev_close_ticks)
            )
            self._emit_status(symbol, ts, "NEW_DAY")

    def _on_trade(self, symbol: _Symbol, tick: Trade) -> None:
        # The hottest function of the service, hence the locals and the inlined steps.
        size = tick.size
        ticks = tick.price_ticks
        if size <= 0 or ticks <= 0:
            log.warning("Dropped an impossible trade %r (feed bug)", tick)
            return
        price, text = symbol.prices.get(ticks) or symbol.rendered(ticks)
        stats = symbol.stats
        stats["last"] = price
        # Day statistics count the regular session, as exchanges and quote pages do; a feed
        # without sessions (no status) counts every trade.
        if stats["status"] in REGULAR:
            if stats["open"] is None:
                stats["open"] = stats["high"] = stats["low"] = price
            elif price > stats["high"]:
                stats["high"] = price
            elif price < stats["low"]:
                stats["low"] = price
            stats["volume"] += size
        # A trade's JSON, rendered without building a dict, and the Event built without
        # the Python-level __new__ (same fields, same order: see events.Event).
        stream = symbol.trades
        stream.seq = seq = stream.seq + 1
        ts = tick.ts
        wire = f'{stream.prefix}{seq},"ts":{ts},"price":{text},"size":{size}}}'
        event = (TRADES, stream.sym, stream.key, stream.epoch, seq, ts, FROM_WIRE, stats, wire, len(wire))
        self._publish(_new_event(event))
        updates = symbol.bars.add(ts, price, size)
        if updates:
            for ch, bar in updates:
                self._emit(ch, symbol, ts, bar)

    def _emit_status(self, symbol: _Symbol, ts: int, reason: str) -> None:
        stats = symbol.stats
        fields = {"status": stats["status"], "reason": reason, "prev_close": stats["prev_close"]}
        self._emit(STATUS, symbol, ts, fields)

    def _emit(self, ch: str, symbol: _Symbol, ts: int, fields: dict[str, Any]) -> None:
        stream = symbol.streams[ch]
        stream.seq = seq = stream.seq + 1
        wire = f'{stream.prefix}{seq},"ts":{ts},{orjson.dumps(fields).decode()[1:]}'
        self._publish(_new_event((ch, stream.sym, stream.key, stream.epoch, seq, ts, fields, symbol.stats, wire,
                                  len(wire))))  # fmt: skip
