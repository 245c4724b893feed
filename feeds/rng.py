"""Deterministic random streams: one per (seed, feed, symbol, purpose), the same on any machine.

Only `Random.random()` is promised to keep its sequence across Python versions, so every
other draw is derived from it here: normals by the inverse CDF, exponentials by inversion.
A string seed goes through SHA-512 inside `random.seed` (version 2), which is stable across
processes and machines, unlike `hash()`, which is salted per process.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Callable
from statistics import NormalDist

# random() can return exactly 0.0 (probability 2**-53); the probit of 0 is -inf.
_SMALLEST = 2.0**-60
_STANDARD = NormalDist()
_inv_cdf: Callable[[float, float, float], float] | None
try:
    # The C probit behind NormalDist.inv_cdf (Python >= 3.11), called directly because the
    # method wrapped around it costs as much again. It is the same algorithm (Wichura's
    # AS241) as the pure-Python fallback, so both give the same numbers.
    from statistics import _normal_dist_inv_cdf as _inv_cdf  # type: ignore[attr-defined,no-redef]
except ImportError:  # pragma: no cover - interpreters without the C accelerator
    _inv_cdf = None

Uniform = Callable[[], float]


def stream(seed: int, *parts: str) -> random.Random:
    """An independent stream keyed by the seed and a path such as ('sim', 'AAPL', 'price')."""
    return random.Random("/".join((str(seed), *parts)))


def probit(p: float) -> float:
    """The standard normal quantile of p, in (0, 1)."""
    if _inv_cdf is not None:
        return _inv_cdf(p, 0.0, 1.0)
    return _STANDARD.inv_cdf(p)  # pragma: no cover


def normal(uniform: Uniform) -> float:
    """A standard normal draw from one uniform."""
    if _inv_cdf is not None:
        return _inv_cdf(uniform() or _SMALLEST, 0.0, 1.0)
    return _STANDARD.inv_cdf(uniform() or _SMALLEST)  # pragma: no cover


def poisson(uniform: Uniform, mean: float) -> int:
    """A Poisson count by inversion; quick because the means here are tiny (jumps per tick)."""
    u = uniform()
    p = math.exp(-mean)
    cumulative = p
    n = 0
    while u > cumulative and p > 0.0:
        n += 1
        p *= mean / n
        cumulative += p
    return n


def fresh_seed() -> int:
    """A seed for a config that gave none; the feed logs it so the run can be repeated."""
    return secrets.randbits(63)
