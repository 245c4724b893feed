"""From a latent mid price to what a watcher sees: a quote on the tick grid, trades, sizes.

All prices are integer units of the symbol's wire tick size. The quoted increment can be
coarser than the unit: a sub-dollar stock with `tick_size: auto` travels in $0.0001 units,
but quotes in whole cents once it trades at or above $1 (Reg NMS Rule 612).
"""

from __future__ import annotations

import math

from feeds.rng import Uniform, probit

# Sizes are drawn from this many equally likely lognormal quantiles: one uniform and an
# index instead of a probit and an exponential, for a distribution no one can tell apart.
SIZE_QUANTILES = 256

# SEC round-lot tiers (Regulation NMS, Market Data Infrastructure rules, in force since
# November 3, 2025): (highest price of the tier, round lot in shares).
ROUND_LOT_TIERS = ((250.0, 100), (1_000.0, 40), (10_000.0, 10))


def round_lot(price: float) -> int:
    for ceiling, lot in ROUND_LOT_TIERS:
        if price <= ceiling:
            return lot
    return 1


def size_table(median_lots: float, sigma: float, lot: int) -> tuple[int, ...]:
    """Sizes in shares at the midpoints of SIZE_QUANTILES equal-probability bins, >= one lot."""
    out = []
    for k in range(SIZE_QUANTILES):
        lots = round(median_lots * math.exp(sigma * probit((k + 0.5) / SIZE_QUANTILES)))
        out.append(lot * max(1, lots))
    return tuple(out)


def odd_lot_share(base: float, price: float) -> float:
    """Odd lots are a larger share of trades in high-priced stocks (SEC odd-lot studies)."""
    if price <= 100.0:
        return base
    return min(0.9, base + 0.1 * math.log2(price / 100.0))


class Book:
    """A symbol's displayed quote and its trade and size rules."""

    __slots__ = (
        "ask",
        "ask_size",
        "bid",
        "bid_size",
        "bps",
        "buy_prob",
        "dollar_units",
        "lot",
        "midpoint_prob",
        "min_ticks",
        "odd_prob",
        "quote_sizes",
        "trade_sizes",
        "uniform",
        "widen_prob",
    )

    def __init__(
        self,
        *,
        uniform: Uniform,
        sub_penny: bool,
        unit: float,
        price: float,
        spread_bps: float,
        min_ticks: int,
        widen_prob: float,
        buy_prob: float,
        midpoint_prob: float,
        lot: int,
        odd_lot_prob: float,
        trade_notional: float,
        trade_sigma: float,
        quote_notional: float,
        quote_sigma: float,
    ) -> None:
        self.uniform = uniform
        # Units in one dollar, when the quoted increment switches to a cent at $1; else 0.
        self.dollar_units = round(1.0 / unit) if sub_penny else 0
        self.bps = spread_bps * 1e-4
        self.min_ticks = min_ticks
        self.widen_prob = widen_prob
        self.buy_prob = buy_prob
        self.midpoint_prob = midpoint_prob
        self.lot = lot
        self.odd_prob = odd_lot_share(odd_lot_prob, price) if lot > 1 else 0.0
        self.trade_sizes = size_table(trade_notional / (price * lot), trade_sigma, lot)
        self.quote_sizes = size_table(quote_notional / (price * lot), quote_sigma, lot)
        self.bid = self.ask = self.bid_size = self.ask_size = 0

    def increment(self, mid: float) -> int:
        """The quoted price increment at `mid`, in units."""
        if self.dollar_units and mid >= self.dollar_units:
            return self.dollar_units // 100
        return 1

    def quote_at(self, mid: float, spread_mult: float) -> tuple[int, int]:
        """Bid and ask around `mid` (in units): on the grid, ask > bid >= one increment."""
        inc = self.increment(mid)
        ticks = math.ceil(self.bps * mid / inc)
        if ticks < self.min_ticks:
            ticks = self.min_ticks
        if spread_mult != 1.0:
            ticks = math.ceil(ticks * spread_mult)
        if self.uniform() < self.widen_prob:
            ticks += 1
        # floor(m - (k-1)/2) keeps the mid inside [bid, ask] whatever the parity of k.
        bid = math.floor(mid / inc - (ticks - 1) / 2)
        if bid < 1:
            bid = 1
        return bid * inc, (bid + ticks) * inc

    def show(self, bid: int, ask: int) -> None:
        """Display a new quote with freshly drawn sizes."""
        self.bid, self.ask = bid, ask
        sizes, u = self.quote_sizes, self.uniform
        self.bid_size = sizes[int(u() * SIZE_QUANTILES)]
        self.ask_size = sizes[int(u() * SIZE_QUANTILES)]

    def trade(self) -> tuple[int, int]:
        """A print against the displayed quote: (price in units, size in shares)."""
        u = self.uniform
        bid, ask = self.bid, self.ask
        if u() < self.midpoint_prob and (ask - bid) % (2 * self.increment(bid)) == 0:
            price = (bid + ask) // 2
        else:
            price = ask if u() < self.buy_prob else bid
        if u() < self.odd_prob:
            return price, 1 + int(u() * (self.lot - 1))
        return price, self.trade_sizes[int(u() * SIZE_QUANTILES)]
