"""The `market` feed: a simulated market paced against the wall clock.

The simulation itself (`feeds.simulation`) is pure; this module only decides how much
market time has passed and sleeps until the next event is due: wall time = market time /
`time_scale` in sessions, and `closed_wall_s` for a whole closed stretch.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from feeds.base import Emit, SymbolSpec
from feeds.clock import MAX_CATCH_UP_S, MIN_SLEEP_S, SYSTEM_CLOCK, Clock
from feeds.market_config import MarketConfig
from feeds.rng import fresh_seed
from feeds.schema import resolve_tick
from feeds.simulation import Simulation, start_time

log = logging.getLogger(__name__)

# Upper bound of one sleep, so a long quiet stretch is re-measured against the clock.
_MAX_SLEEP_S = 1.0


class MarketFeed:
    def __init__(self, config: MarketConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = config.name
        self.config = config
        self._clock = clock
        self.seed = config.seed if config.seed is not None else fresh_seed()
        log.info(
            "Feed %r simulates %d symbols with seed %d%s",
            self.name,
            len(config.symbols),
            self.seed,
            "" if config.seed is not None else " (random; set `seed` in the config to repeat this run)",
        )
        self._specs = []
        for position, spec in enumerate(config.symbols):
            sym = config.resolved(position)
            unit, _ = resolve_tick(sym.tick_size, spec.price)
            self._specs.append(
                SymbolSpec(
                    symbol=spec.symbol,
                    tick_size=unit,
                    prev_close_ticks=max(1, round(Decimal(str(sym.prev_close)) / unit)),
                    name=spec.name,
                    sector=spec.sector,
                )
            )

    def symbols(self) -> list[SymbolSpec]:
        return list(self._specs)

    def simulation(self, start: float | None = None) -> Simulation:
        """A fresh simulation from the configured start (or from market time `start`)."""
        calendar = self.config.calendar.build()
        if start is None:
            start = start_time(self.config, calendar, self._clock.time())
        return Simulation(self.config, self.seed, start)

    async def run(self, emit: Emit) -> None:
        sim = self.simulation()
        sim.start(emit)
        clock = self._clock
        last = clock.monotonic()
        while True:
            now = clock.monotonic()
            elapsed = min(now - last, MAX_CATCH_UP_S)
            last = now
            sim.advance(sim.market_after(sim.now, elapsed), emit)
            wait = sim.wall_seconds(sim.now, sim.next_time())
            await clock.sleep(min(max(wait, MIN_SLEEP_S), _MAX_SLEEP_S))
