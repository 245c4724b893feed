"""A synthetic load feed: trades at an exact total rate, round-robin over N symbols.

For benchmarks and load tests, not for looking at: prices wander by one tick at a time.
Events go out in bursts every `burst_ms`, stamped with the wall-clock time of the burst, so
a client can measure end-to-end latency from `ts`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from feeds.base import Emit, Status, SymbolSpec, Tick, Trade, emit_burst

MAX_LAG_S = 0.05

_new_trade = partial(tuple.__new__, Trade)  # a Trade without its Python-level __new__


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["synthetic"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    symbols: Annotated[int, Field(ge=1, le=100_000, description="how many symbols: S0000, S0001, ...")] = 100
    prefix: Annotated[str, Field(pattern=r"^[A-Z]{1,4}$")] = "S"
    rate: Annotated[float, Field(gt=0, le=10_000_000, description="trades per second, all symbols together")]
    burst_ms: Annotated[int, Field(ge=1, le=1000)] = 5
    seed: int = 1

    def symbol_names(self) -> list[str]:
        width = max(4, len(str(self.symbols - 1)))
        return [f"{self.prefix}{i:0{width}d}" for i in range(self.symbols)]

    def build(self) -> SyntheticFeed:
        return SyntheticFeed(self)


class SyntheticFeed:
    def __init__(
        self,
        config: SyntheticConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = config.name
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._names = config.symbol_names()
        self._next = 0  # the symbol of the next trade

    def symbols(self) -> list[SymbolSpec]:
        return [SymbolSpec(name, Decimal("0.01"), 10_000) for name in self._names]

    async def run(self, emit: Emit) -> None:
        cfg = self._config
        rng = random.Random(cfg.seed)
        names = self._names
        now_ms = int(self._clock() * 1000)
        for name in names:
            emit(Status(name, now_ms, "open"))
        loop = asyncio.get_running_loop()
        interval = cfg.burst_ms / 1000
        # Sleeps overshoot a little: up to two intervals' worth still goes as one burst, so a
        # server that keeps up gets one burst per interval, not a full one and a crumb.
        per_burst = max(1, math.ceil(2 * cfg.rate * interval))
        due = 0.0  # fractional events carried between bursts, so the rate is exact
        prices = [10_000] * len(names)
        next_at = last = loop.time()
        while True:
            now = loop.time()
            # Owed events follow elapsed time, not the number of bursts: sleeps overshoot.
            # A server that cannot keep up is owed at most MAX_LAG_S of events: past that
            # the rest are never made (the delivered rate falls short, the benchmark sees
            # it), rather than bursts that grow without end and fill the memory.
            due = min(due + cfg.rate * (now - last), cfg.rate * MAX_LAG_S + 1)
            last = now
            count = int(due)
            due -= count
            while True:
                # Owed events go out as bursts of at most per_burst each, the loop turning
                # in between: the server hands each out before the next arrives, instead of
                # holding (and its garbage collector walking) 50 ms of events at once.
                size = min(count, per_burst)
                emit_burst(emit, self._burst(rng, prices, size, int(self._clock() * 1000)))
                count -= size
                if not count:
                    break
                await self._sleep(0)
            next_at = max(next_at + interval, loop.time())
            await self._sleep(next_at - loop.time())

    def _burst(self, rng: random.Random, prices: list[int], count: int, now_ms: int) -> Iterator[Tick]:
        """`count` trades round-robin over the symbols, each a tick up or down (never below 100).

        Made one at a time as the sequencer takes them, not as a list: a burst of a thousand
        ticks held at once would be alive at the garbage collector's young collections, which
        then promote them to the old generation, and promotions are what make full
        collections frequent (docs/performance.md, "The garbage collector").
        """
        names = self._names
        index = self._next
        try:
            # One random byte per trade, drawn at C speed: the loop below is the feed's whole cost.
            for step in rng.randbytes(count):
                price = prices[index] + (1 if step < 128 else -1)
                if price < 100:
                    price = 100
                prices[index] = price
                name = names[index]
                index += 1
                if index == len(names):
                    index = 0
                yield _new_trade((name, now_ms, price, 100))
        finally:
            # Also when the taker stops early (the generator is closed): the next burst
            # starts after the last trade made.
            self._next = index
