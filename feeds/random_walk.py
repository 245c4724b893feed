"""A seeded random walk per symbol: quotes around a drifting mid, trades at the bid or ask.

Deliberately simple (the realistic market model is its own feed kind). What it does keep
honest: prices stay on the tick grid, bid < ask, trades print inside the quote, and the
same seed gives the same sequence of prices on any machine.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from feeds.base import Emit, Quote, Status, SymbolSpec, Trade

SECONDS_PER_TRADING_YEAR = 252 * 6.5 * 3600


class RandomWalkSymbol(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9.\-]{0,15}$")]
    price: Annotated[float, Field(gt=0, description="starting price, also the previous close")]
    volatility: Annotated[float, Field(gt=0, le=5, description="annualised, e.g. 0.3 = 30 %")] = 0.3
    tick_size: Decimal | Literal["auto"] = "auto"
    spread_ticks: Annotated[int, Field(ge=1, le=1000)] = 1
    name: str = ""

    @field_validator("symbol")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("tick_size")
    @classmethod
    def _positive_tick(cls, value: Decimal | str) -> Decimal | str:
        if isinstance(value, Decimal) and value <= 0:
            raise ValueError("tick_size must be a positive number or 'auto'")
        return value

    def effective_tick(self) -> Decimal:
        if isinstance(self.tick_size, Decimal):
            return self.tick_size
        return Decimal("0.01") if self.price >= 1 else Decimal("0.0001")


class RandomWalkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["random_walk"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    seed: int = 42
    interval_ms: Annotated[int, Field(ge=1, le=60_000, description="one step per symbol")] = 250
    activity: Annotated[float, Field(gt=0, le=1, description="chance a symbol ticks per step")] = 0.6
    trade_ratio: Annotated[float, Field(ge=0, le=1, description="share of ticks that trade")] = 0.35
    time_scale: Annotated[float, Field(gt=0, description="market seconds per wall second")] = 60.0
    symbols: Annotated[list[RandomWalkSymbol], Field(min_length=1)]

    @field_validator("symbols")
    @classmethod
    def _unique(cls, symbols: list[RandomWalkSymbol]) -> list[RandomWalkSymbol]:
        seen: set[str] = set()
        for spec in symbols:
            if spec.symbol in seen:
                raise ValueError(f"symbol {spec.symbol} is listed twice")
            seen.add(spec.symbol)
        return symbols

    def symbol_names(self) -> list[str]:
        return [s.symbol for s in self.symbols]

    def build(self) -> RandomWalkFeed:
        return RandomWalkFeed(self)


@dataclass(slots=True)
class _Walk:
    spec: SymbolSpec
    rng: random.Random
    sigma_per_step: float
    spread_ticks: int
    log_mid: float


class RandomWalkFeed:
    def __init__(
        self,
        config: RandomWalkConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = config.name
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._specs = [
            SymbolSpec(
                symbol=s.symbol,
                tick_size=s.effective_tick(),
                prev_close_ticks=max(1, round(Decimal(str(s.price)) / s.effective_tick())),
                name=s.name,
            )
            for s in config.symbols
        ]

    def symbols(self) -> list[SymbolSpec]:
        return list(self._specs)

    def _walks(self) -> list[_Walk]:
        step_years = self._config.interval_ms / 1000 * self._config.time_scale / SECONDS_PER_TRADING_YEAR
        walks = []
        for spec, sym in zip(self._specs, self._config.symbols, strict=True):
            # A string seed goes through SHA-512 in `random.seed`: stable across machines and
            # runs, unlike `hash()`.
            rng = random.Random(f"{self._config.seed}:{spec.symbol}")
            walks.append(
                _Walk(
                    spec=spec,
                    rng=rng,
                    sigma_per_step=sym.volatility * math.sqrt(step_years),
                    spread_ticks=sym.spread_ticks,
                    log_mid=math.log(spec.prev_close_ticks),
                )
            )
        return walks

    def step(self, walks: list[_Walk], now_ms: int, emit: Emit) -> None:
        """Advance every symbol by one step; emit its ticks."""
        cfg = self._config
        for walk in walks:
            rng = walk.rng
            if rng.random() >= cfg.activity:
                continue
            walk.log_mid += rng.gauss(0.0, walk.sigma_per_step)
            mid = max(walk.spread_ticks + 1, round(math.exp(walk.log_mid)))
            bid = mid - walk.spread_ticks // 2 - (walk.spread_ticks % 2)
            ask = bid + walk.spread_ticks
            if bid < 1:
                bid, ask = 1, 1 + walk.spread_ticks
            sym = walk.spec.symbol
            emit(Quote(sym, now_ms, bid, 100 * rng.randint(1, 20), ask, 100 * rng.randint(1, 20)))
            if rng.random() < cfg.trade_ratio:
                price = ask if rng.random() < 0.5 else bid
                size = rng.choice((100, 100, 100, 200, 300, 500)) if rng.random() < 0.8 else rng.randint(1, 99)
                emit(Trade(sym, now_ms, price, size))

    async def run(self, emit: Emit) -> None:
        walks = self._walks()
        interval = self._config.interval_ms / 1000
        now_ms = int(self._clock() * 1000)
        for walk in walks:
            # A random walk has no sessions: its market is always open.
            emit(Status(walk.spec.symbol, now_ms, "open"))
        while True:
            self.step(walks, int(self._clock() * 1000), emit)
            await self._sleep(interval)
