"""How fast the feeds generate events, on one core: `python -m bench.feeds [--seconds 2]`.

Generating must never be the bottleneck of the service. This measures, for 500 symbols, the
events per second that the `market` simulation produces (no pacing: the generator flat
out), next to a baseline measured in the same run on the same machine (the simple
`random_walk` feed's step loop), and the `replay` feed at speed 0 on the shipped sample.
It also prints the rate the simulated market asks for at the configured activity, so the
headroom is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feeds.base import Tick
from feeds.clock import VirtualClock
from feeds.market_config import MarketConfig
from feeds.random_walk import RandomWalkConfig, RandomWalkFeed
from feeds.replay import ReplayConfig, ReplayFeed

SYMBOLS = 500
SECTORS = ("tech", "energy", "health", "finance", "consumer", "industrial", "utilities", "materials")
SAMPLE = Path(__file__).resolve().parent.parent / "feeds" / "data" / "sample-minute-aggs.csv.gz"


class Counter:
    """An emit callback that only counts, so the measurement is the generator's own cost."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, tick: Tick) -> None:
        self.count += 1


def _symbols() -> list[dict[str, Any]]:
    out = []
    for i in range(SYMBOLS):
        price = 5.0 + (i * 37 % 495)
        sector = SECTORS[i % len(SECTORS)]
        out.append(
            {
                "symbol": f"S{i:03d}",
                "price": price,
                "sector": sector,
                "volatility": 0.2 + (i % 7) * 0.05,
                "loadings": {"market": 0.8 + (i % 5) * 0.1, sector: 0.6},
            }
        )
    return out


def market_config() -> MarketConfig:
    return MarketConfig.model_validate(
        {
            "kind": "market",
            "name": "bench",
            "seed": 1,
            "time_scale": 60,
            "start": "2025-03-03T09:30:00-05:00",
            "factors": {"market": {"volatility": 0.15}, **{s: {"volatility": 0.1} for s in SECTORS}},
            "volatility_regime": {"half_life_s": 1800, "vol_of_vol": 0.3, "leverage": -0.5},
            "defaults": {"trades_per_sec": 2.0, "quotes_per_trade": 3.0},
            "symbols": _symbols(),
        }
    )


def bench_market(seconds: float) -> tuple[float, float]:
    """(events per second, market seconds simulated per wall second) of the simulation flat out."""
    sim = market_config().build().simulation()
    emit = Counter()
    sim.start(emit)
    emit.count = 0
    started = time.perf_counter()
    market_start = sim.now
    while time.perf_counter() - started < seconds:
        sim.advance(sim.now + 5.0, emit)  # 5 market seconds per chunk: ~1,300 events
    elapsed = time.perf_counter() - started
    return emit.count / elapsed, (sim.now - market_start) / elapsed


def bench_random_walk(seconds: float) -> float:
    config = RandomWalkConfig.model_validate(
        {
            "kind": "random_walk",
            "name": "baseline",
            "activity": 1.0,
            "symbols": [{"symbol": s["symbol"], "price": s["price"]} for s in _symbols()],
        }
    )
    feed = RandomWalkFeed(config)
    walks = feed._walks()  # the step loop is what we compare against
    emit = Counter()
    now_ms = 1_741_012_200_000
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            now_ms += config.interval_ms
            feed.step(walks, now_ms, emit)
    return emit.count / (time.perf_counter() - started)


def replay_feed() -> ReplayFeed:
    config = ReplayConfig.model_validate(
        {
            "kind": "replay",
            "name": "bench-replay",
            "path": str(SAMPLE),
            "format": "polygon_minute_aggs",
            "symbols": ["ACME", "INIT"],
            "speed": 0,
            "loop": True,
        }
    )
    return ReplayFeed(config, clock=VirtualClock())


def bench_replay(feed: ReplayFeed, seconds: float) -> float:
    """Events per second of a looping replay at speed 0 (the file is parsed beforehand)."""
    emit = Counter()

    async def play() -> None:
        task = asyncio.create_task(feed.run(emit))
        await asyncio.sleep(seconds)  # speed 0 yields every 1,000 ticks, so this wakes up
        task.cancel()

    started = time.perf_counter()
    asyncio.run(play())
    return emit.count / (time.perf_counter() - started)


def demanded_rate(config: MarketConfig) -> float:
    """Events per wall second the market asks for on average in the regular session."""
    return sum(
        config.resolved(i).trades_per_sec * (1 + config.resolved(i).quotes_per_trade)
        for i in range(len(config.symbols))
    )


def best_of(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each measurement `rounds` times, interleaved, keeping the best: on a shared machine
    the load changes from second to second, and interleaving exposes both sides to it."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], run())
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=0.4, help="wall seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best counts")
    args = parser.parse_args(argv)
    speeds: list[float] = []
    replay = replay_feed()

    def market() -> float:
        rate, speed = bench_market(args.seconds)
        speeds.append(speed)
        return rate

    runs: dict[str, Callable[[], float]] = {
        "random_walk step loop (baseline)": lambda: bench_random_walk(args.seconds),
        "market simulation (all features)": market,
        "replay, speed 0 (sample file)": lambda: bench_replay(replay, args.seconds),
    }
    print(f"{SYMBOLS} symbols, one core, best of {args.rounds} interleaved rounds of {args.seconds:g} s\n")
    best = best_of(args.rounds, runs)
    baseline = best["random_walk step loop (baseline)"]
    print(f"{'feed':<36}{'events/s':>12}{'x baseline':>12}")
    for name, rate in best.items():
        print(f"{name:<36}{rate:>12,.0f}{rate / baseline:>12.2f}")
    demand = demanded_rate(market_config())
    market_rate = best["market simulation (all features)"]
    print(
        f"\nThe simulated market asks for {demand:,.0f} events/s on average ({2 * demand:,.0f} at the open, "
        f"U-shape x2);\nthe generator keeps up {market_rate / demand:,.0f}x over, simulating up to "
        f"{max(speeds):,.0f} market seconds per wall second (time_scale 60 needs 60)."
    )


if __name__ == "__main__":
    main()
