"""Turn an OHLCV bar into plausible trades inside it.

The path visits the open, then whichever extreme is nearer the open, then the other, then
the close (a bar that rallies from its open usually made its low first only if the low is
close to the open). Between those anchors it wanders as a Brownian bridge rounded to the
grid and clipped to [low, high]; the bar's volume is split across the prints exactly.
"""

from __future__ import annotations

import itertools
import math

from feeds.rng import Uniform, normal


def bar_prices(open_: int, high: int, low: int, close: int, points: int, uniform: Uniform) -> list[int]:
    """`points` prices (in units) from open to close that touch the high and the low."""
    if points <= 1:
        return [close]
    if points == 2:
        return [open_, close]
    first, second = (high, low) if high - open_ <= open_ - low else (low, high)
    if points == 3:
        return [open_, first, close]
    anchors = [open_, first, second, close]
    spare = points - 4
    legs = [abs(b - a) + 1 for a, b in itertools.pairwise(anchors)]
    # Interior points per leg, in proportion to the leg's length (largest remainders last).
    shares = [spare * leg / sum(legs) for leg in legs]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(3), key=lambda k: counts[k] - shares[k])
    for k in by_remainder[: spare - sum(counts)]:
        counts[k] += 1
    step_sd = max(1.0, (high - low) / (2.0 * math.sqrt(points)))
    prices = [open_]
    for (a, b), inner in zip(itertools.pairwise(anchors), counts, strict=True):
        prices.extend(_bridge(a, b, inner, step_sd, low, high, uniform))
        prices.append(b)
    return prices


def _bridge(a: int, b: int, inner: int, step_sd: float, low: int, high: int, uniform: Uniform) -> list[int]:
    """`inner` points strictly between a and b on a Brownian bridge, on the grid, in range."""
    if inner == 0:
        return []
    walk = [0.0]
    for _ in range(inner + 1):
        walk.append(walk[-1] + step_sd * normal(uniform))
    end = walk[-1]
    out = []
    for j in range(1, inner + 1):
        frac = j / (inner + 1)
        value = a + (b - a) * frac + walk[j] - frac * end  # pinned to a and b
        out.append(min(high, max(low, round(value))))
    return out


def split_volume(volume: int, parts: int, uniform: Uniform) -> list[int]:
    """`parts` positive sizes summing to `volume` (needs volume >= parts >= 1)."""
    weights = [-math.log(1.0 - uniform()) for _ in range(parts)]
    total = sum(weights)
    spare = volume - parts
    shares = [spare * w / total for w in weights]
    sizes = [1 + math.floor(s) for s in shares]
    short = volume - sum(sizes)
    for k in sorted(range(parts), key=lambda k: math.floor(shares[k]) - shares[k])[:short]:
        sizes[k] += 1
    return sizes


def bar_times(duration_ms: int, points: int, uniform: Uniform) -> list[int]:
    """Offsets (ms) inside the bar, increasing, the first at its start: one per stratum."""
    if points <= 0:
        return []
    width = duration_ms / points
    return [0] + [int((k + 0.1 + 0.8 * uniform()) * width) for k in range(1, points)]
