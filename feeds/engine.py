"""The price model: exact log-space GBM driven by shared Brownian "drivers", updated lazily.

Two clocks run under every symbol:
- trading time `T` (years): advances only in sessions, shaped by the intraday profile, with a
  jump of `overnight_var_fraction` days at each day's first session. Drift and jump
  intensity accrue in it.
- variance time `V` = integral of m^2 dT, where m is the market-wide volatility multiplier
  (1 without a regime). Diffusion accrues in it.

A driver is a standard Brownian motion in variance time. Factors are drivers; so are the
columns of the Cholesky factor of a pairwise correlation matrix. A symbol loads on a few
drivers (weights in volatility units) plus its own idiosyncratic noise. Nothing moves until a
symbol ticks: then each driver it loads on is brought to the current V with one exact
Gaussian increment, and the symbol takes the change since its last tick. The cost of a tick
is O(drivers the symbol loads on), whatever the number of symbols, and the result is exact
for any gap between ticks (GBM and Merton jumps have closed-form transitions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from feeds.rng import Uniform, normal, poisson

_SMALLEST = 2.0**-60
_PIVOT_EPS = 1e-10


class Driver:
    """A standard Brownian motion in variance time, drawn only where someone looks."""

    __slots__ = ("at", "uniform", "value")

    def __init__(self, uniform: Uniform) -> None:
        self.value = 0.0
        self.at = 0.0  # the variance time `value` belongs to
        self.uniform = uniform

    def advance(self, v: float) -> float:
        if self.at < v:
            self.value += math.sqrt(v - self.at) * normal(self.uniform)
            self.at = v
        return self.value


class ShockPath:
    """Scripted log-return of a factor: a sum of linear ramps in market time."""

    __slots__ = ("base", "ramps")

    def __init__(self) -> None:
        self.base = 0.0
        self.ramps: list[tuple[float, float, float]] = []  # (start, end, log return)

    def add(self, start: float, duration: float, log_return: float) -> None:
        self.ramps.append((start, start + duration, log_return))

    def value(self, tau: float) -> float:
        total = self.base
        done = []
        for ramp in self.ramps:
            start, end, size = ramp
            if tau >= end:
                done.append(ramp)
                total += size
            elif tau > start:
                total += size * (tau - start) / (end - start)
        for ramp in done:  # finished ramps become a constant: the list stays short
            self.ramps.remove(ramp)
            self.base += ramp[2]
        return total


class PriceState:
    """One symbol's log price and the snapshots its next update is measured from."""

    __slots__ = (
        "drift",
        "half_var",
        "idio",
        "jump_mean",
        "jump_rate",
        "jump_sd",
        "loads",
        "shock_snaps",
        "shocks",
        "snaps",
        "t",
        "uniform",
        "v",
        "x",
    )

    def __init__(
        self,
        *,
        price: float,
        volatility: float,
        drift: float,
        loads: Sequence[tuple[Driver, float]],
        shocks: Sequence[tuple[ShockPath, float]],
        jumps: tuple[float, float, float] | None,
        uniform: Uniform,
    ) -> None:
        self.x = math.log(price)
        self.t = 0.0
        self.v = 0.0
        systematic = sum(w * w for _, w in loads)
        residual = volatility**2 - systematic
        # A Cholesky row carries all of the variance: what is left is rounding, not noise.
        self.idio = math.sqrt(residual) if residual > 1e-12 * volatility**2 else 0.0
        self.half_var = 0.5 * (systematic + self.idio**2)
        rate, mean, sd = jumps or (0.0, 0.0, 0.0)
        # Merton's compensator keeps the expected return equal to `drift` with jumps on.
        self.drift = drift - rate * (math.exp(mean + 0.5 * sd * sd) - 1.0)
        self.jump_rate, self.jump_mean, self.jump_sd = rate, mean, sd
        self.loads = tuple(loads)
        self.snaps = [0.0] * len(self.loads)
        self.shocks = tuple(shocks)
        self.shock_snaps = [0.0] * len(self.shocks)
        self.uniform = uniform


class Engine:
    """The global clocks, the drivers and the volatility regime."""

    def __init__(
        self,
        *,
        regime: tuple[float, float, float] | None = None,
        regime_driver: Driver | None = None,
        regime_uniform: Uniform | None = None,
        regime_step: float = 0.0,
    ) -> None:
        self.tau = 0.0  # market time (Unix seconds) the clocks stand at
        self.T = 0.0
        self.V = 0.0
        self.h = 0.0  # ln of the stochastic volatility multiplier; starts at 1x
        self.scripted = 1.0  # scripted variance multiplier (a scenario's multiplier squared)
        self.m2 = 1.0
        self._regime = regime  # (kappa per year, stationary sd of h, leverage)
        self._regime_driver = regime_driver
        self._regime_uniform = regime_uniform
        # The regime moves slowly (a half-life of minutes), so it is stepped every
        # `regime_step` years of trading time rather than at every tick: the OU step is exact
        # for any length, and m is constant in between.
        self._regime_step = regime_step
        self._regime_due = 0.0
        self._mark_value = 0.0  # the leverage factor's value and V at the last regime step
        self._mark_v = 0.0

    def set_scripted(self, multiplier: float) -> None:
        self.scripted = multiplier * multiplier
        self.m2 = math.exp(2.0 * self.h) * self.scripted

    def accrue(self, dt: float) -> None:
        """Let `dt` years of trading time pass for the market as a whole."""
        if dt <= 0.0:
            return
        self.V += self.m2 * dt
        self.T += dt
        if self._regime is None:
            return
        self._regime_due += dt
        if self._regime_due < self._regime_step:
            return
        dt, self._regime_due = self._regime_due, 0.0
        kappa, sd, leverage = self._regime
        eta = normal(self._regime_uniform) if self._regime_uniform else 0.0
        driver = self._regime_driver
        if driver is not None and leverage != 0.0:
            # The factor's standardised shock since the last step, so that the volatility
            # shock can be correlated with it: the leverage effect (vol up when the market falls).
            driver.advance(self.V)
            span = self.V - self._mark_v
            z = (driver.value - self._mark_value) / math.sqrt(span) if span > 0.0 else 0.0
            self._mark_value, self._mark_v = driver.value, self.V
            eta = leverage * z + math.sqrt(1.0 - leverage * leverage) * eta
        # Exact Ornstein-Uhlenbeck step around theta = -sd^2, which makes E[m^2] = 1.
        decay = math.exp(-kappa * dt)
        theta = -sd * sd
        self.h = theta + (self.h - theta) * decay + sd * math.sqrt(1.0 - decay * decay) * eta
        self.m2 = math.exp(2.0 * self.h) * self.scripted

    def update(self, s: PriceState) -> float:
        """Bring a symbol's log price to the current clocks; returns it."""
        v = self.V
        dv = v - s.v
        x = s.x
        if dv > 0.0:
            dt = self.T - s.t
            x += s.drift * dt - s.half_var * dv
            snaps = s.snaps
            for n, (driver, weight) in enumerate(s.loads):
                if driver.at < v:
                    driver.value += math.sqrt(v - driver.at) * normal(driver.uniform)
                    driver.at = v
                x += weight * (driver.value - snaps[n])
                snaps[n] = driver.value
            if s.idio > 0.0:
                x += s.idio * math.sqrt(dv) * normal(s.uniform)
            if s.jump_rate > 0.0:
                jumps = poisson(s.uniform, s.jump_rate * dt)
                if jumps:
                    x += jumps * s.jump_mean + s.jump_sd * math.sqrt(jumps) * normal(s.uniform)
            s.v = v
            s.t = self.T
        if s.shocks:
            for n, (path, beta) in enumerate(s.shocks):
                value = path.value(self.tau)
                x += beta * (value - s.shock_snaps[n])
                s.shock_snaps[n] = value
        s.x = x
        return x


def correlation_matrix(names: Sequence[str], pairs: Sequence[tuple[str, str, float]]) -> list[list[float]]:
    """The full matrix of `names` from the listed pairs; unlisted pairs are uncorrelated."""
    position = {name: i for i, name in enumerate(names)}
    matrix = [[1.0 if i == j else 0.0 for j in range(len(names))] for i in range(len(names))]
    for a, b, rho in pairs:
        i, j = position[a], position[b]
        matrix[i][j] = matrix[j][i] = rho
    return matrix


def cholesky(matrix: Sequence[Sequence[float]]) -> list[list[float]] | int:
    """Lower-triangular L with L L^T = matrix, or the row at which it is not positive definite."""
    n = len(matrix)
    lower = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            total = sum(lower[i][k] * lower[j][k] for k in range(j))
            if i == j:
                pivot = matrix[i][i] - total
                if pivot <= _PIVOT_EPS:
                    return i
                lower[i][i] = math.sqrt(pivot)
            else:
                lower[i][j] = (matrix[i][j] - total) / lower[j][j]
    return lower
