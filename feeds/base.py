"""The vocabulary every feed shares: ticks, symbol specs and the Feed protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """What a client needs to know about a symbol before its first tick."""

    symbol: str
    tick_size: Decimal
    prev_close_ticks: int
    name: str = ""
    sector: str = ""  # for grouping on a page; empty when the feed does not know it

    @property
    def price_decimals(self) -> int:
        exponent = self.tick_size.normalize().as_tuple().exponent
        return max(0, -exponent) if isinstance(exponent, int) else 0


# Prices travel as integer multiples of the symbol's tick size, so a price can never be
# off the grid and never be NaN; the sequencer turns them into rounded JSON numbers.
# Ticks are NamedTuples: immutable like frozen dataclasses, and several times cheaper to
# create, which matters at hundreds of thousands a second.
class Trade(NamedTuple):
    symbol: str
    ts: int  # Unix milliseconds
    price_ticks: int
    size: int


class Quote(NamedTuple):
    symbol: str
    ts: int
    bid_ticks: int
    bid_size: int
    ask_ticks: int
    ask_size: int


class Status(NamedTuple):
    """The symbol's trading status changed (session transitions, halts)."""

    symbol: str
    ts: int
    status: str  # one of STATUSES
    reason: str = ""


STATUSES = ("pre", "open", "post", "closed", "halted")


class NewDay(NamedTuple):
    """A new trading day starts for the symbol: day statistics restart from here."""

    symbol: str
    ts: int
    prev_close_ticks: int


Tick = Trade | Quote | Status | NewDay
Emit = Callable[[Tick], None]


def emit_burst(emit: Emit, ticks: Iterable[Tick]) -> None:
    """Emit ticks that happened together.

    In one call where the receiver takes bursts (the service's sequencer does: it publishes
    them as one, which saves several calls per tick downstream), else tick by tick.
    """
    burst = getattr(emit, "burst", None)
    if burst is not None:
        burst(ticks)
    else:
        for tick in ticks:
            emit(tick)


class FeedConfig(Protocol):
    name: str

    def symbol_names(self) -> list[str]:
        """The symbols the feed will publish, known without building it."""
        ...

    def build(self) -> Feed: ...


class Feed(Protocol):
    """A source of ticks. `run` emits until cancelled; raising means the feed failed."""

    name: str

    def symbols(self) -> list[SymbolSpec]: ...

    async def run(self, emit: Emit) -> None: ...
