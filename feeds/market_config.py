"""The `market` feed kind's configuration: symbols, factors, correlations, sessions, scenarios.

Rates name their clock: `_per_sec` is wall time (what a watcher sees), `_per_year` and
`volatility` are trading time, `_s` keys are seconds (market time unless they say `wall`).
Every rule that spans fields reports the field that breaks it.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from feeds.calendar import Calendar, CalendarConfig
from feeds.schema import StrictModel, Symbol, TickSize, format_time_of_day, raise_errors, seconds_of_day

if TYPE_CHECKING:
    from feeds.market import MarketFeed

Volatility = Annotated[float, Field(ge=0, le=5, description="annualised, trading time; 0.3 = 30 %")]
Probability = Annotated[float, Field(ge=0, le=1)]
Pct = Annotated[float, Field(gt=-100, le=1000)]
Errors = list[tuple[tuple[str | int, ...], str, Any]]


class FactorConfig(StrictModel):
    volatility: Volatility


class JumpConfig(StrictModel):
    """Merton jumps: Poisson arrivals of normally distributed log-returns."""

    rate_per_year: Annotated[float, Field(ge=0, le=10_000)]
    mean_pct: Annotated[float, Field(ge=-50, le=50)] = 0.0  # mean log jump, in percent
    stdev_pct: Annotated[float, Field(ge=0, le=50)] = 2.0


class SymbolDefaults(StrictModel):
    """Values every symbol of the feed gets unless it sets its own."""

    volatility: Volatility = 0.25
    drift: Annotated[float, Field(ge=-5, le=5, description="annualised expected return")] = 0.0
    tick_size: TickSize = "auto"
    loadings: dict[str, Annotated[float, Field(ge=-10, le=10)]] = Field(default_factory=dict)
    jumps: JumpConfig | None = None
    trades_per_sec: Annotated[float, Field(gt=0, le=200, description="wall time, regular session")] = 1.0
    quotes_per_trade: Annotated[float, Field(ge=0, le=50)] = 3.0
    spread_bps: Annotated[float, Field(ge=0, le=1000)] = 0.5
    min_spread_ticks: Annotated[int, Field(ge=1, le=1000)] = 1


class SymbolConfig(StrictModel):
    symbol: Symbol
    name: Annotated[str, Field(max_length=100)] = ""
    sector: Annotated[str, Field(max_length=50)] = ""
    price: Annotated[float, Field(gt=0, le=10_000_000)]
    prev_close: Annotated[float | None, Field(gt=0, le=10_000_000)] = None
    # None: take the feed's `defaults`.
    volatility: Volatility | None = None
    drift: Annotated[float | None, Field(ge=-5, le=5)] = None
    tick_size: TickSize | None = None
    loadings: dict[str, Annotated[float, Field(ge=-10, le=10)]] | None = None
    jumps: JumpConfig | None = None
    trades_per_sec: Annotated[float | None, Field(gt=0, le=200)] = None
    quotes_per_trade: Annotated[float | None, Field(ge=0, le=50)] = None
    spread_bps: Annotated[float | None, Field(ge=0, le=1000)] = None
    min_spread_ticks: Annotated[int | None, Field(ge=1, le=1000)] = None


class TradeSize(StrictModel):
    # Sizes scale with price: a $0.80 stock trades thousands of shares, a $700 one a handful.
    median_notional: Annotated[float, Field(gt=0, le=1e9, description="USD")] = 10_000.0
    sigma: Annotated[float, Field(ge=0, le=3, description="of the log size")] = 1.0
    # Base odd-lot share of trades; it rises by 0.1 per doubling of the price above $100.
    odd_lot_prob: Probability = 0.35


class QuoteSize(StrictModel):
    median_notional: Annotated[float, Field(gt=0, le=1e9, description="USD")] = 30_000.0
    sigma: Annotated[float, Field(ge=0, le=3)] = 0.8


class Microstructure(StrictModel):
    widen_prob: Probability = 0.1  # a quote one tick wider than usual
    buy_prob: Probability = 0.5  # a trade lifts the ask (else hits the bid)
    midpoint_prob: Probability = 0.05  # a trade prints at the midpoint, when it is on the grid
    # Round lot: auto follows the SEC tiers in force since November 2025 (100 shares up to
    # $250, 40 up to $1,000, 10 up to $10,000, then 1), from the starting price.
    lot: Literal["auto"] | Annotated[int, Field(ge=1, le=10_000)] = "auto"
    trade_size: TradeSize = TradeSize()
    quote_size: QuoteSize = QuoteSize()


class RegimeConfig(StrictModel):
    """Market-wide stochastic volatility: ln(multiplier) is an Ornstein-Uhlenbeck process."""

    half_life_s: Annotated[float, Field(gt=0, le=1e9, description="trading time")] = 1800.0
    vol_of_vol: Annotated[float, Field(ge=0, le=2, description="stationary sd of ln(multiplier)")] = 0.3
    leverage: Annotated[float, Field(ge=-1, le=1, description="corr(vol shock, factor shock)")] = -0.5
    factor: str = "market"  # the factor whose shocks the leverage correlates with


def _parse_at(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and "T" in value.upper():
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected 'HH:MM' or an ISO date-time, got {value!r}") from None
    return seconds_of_day(value)


ScenarioAction = Literal["halt", "jump", "factor_shock", "volatility"]
# Which keys each action uses; the rest must be absent, so a typo'd action is caught.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "halt": ("symbols", "duration_s"),
    "jump": ("symbols", "return_pct"),
    "factor_shock": ("factor", "return_pct"),
    "volatility": ("multiplier",),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "halt": ("reopen_jump_pct", "reason"),
    "jump": (),
    "factor_shock": ("over_s",),
    "volatility": ("duration_s",),
}


class Scenario(StrictModel):
    """A scripted event at a time of day (every trading day) or at one date-time."""

    at: Annotated[int | datetime, BeforeValidator(_parse_at)]
    action: ScenarioAction
    symbols: list[Symbol] | None = None
    factor: str | None = None
    duration_s: Annotated[float | None, Field(gt=0, le=30 * 86400)] = None
    reopen_jump_pct: Pct | None = None
    return_pct: Pct | None = None
    over_s: Annotated[float | None, Field(ge=0, le=86400)] = None
    multiplier: Annotated[float | None, Field(gt=0, le=20)] = None
    reason: Annotated[str | None, Field(max_length=200)] = None

    @model_validator(mode="after")
    def _keys_fit_action(self) -> Scenario:
        errors: Errors = []
        used = _REQUIRED[self.action] + _OPTIONAL[self.action]
        for key in _REQUIRED[self.action]:
            if getattr(self, key) is None:
                errors.append(((key,), f"required by action {self.action!r}", None))
        for key in ("symbols", "factor", "duration_s", "reopen_jump_pct", "return_pct", "over_s", "multiplier"):
            if key not in used and getattr(self, key) is not None:
                errors.append(((key,), f"not used by action {self.action!r} (it takes {', '.join(used)})", None))
        if self.reason is not None and "reason" not in used:
            errors.append((("reason",), f"not used by action {self.action!r}", None))
        raise_errors(errors)
        return self


class MarketConfig(StrictModel):
    kind: Literal["market"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    # None: a random seed, logged at start and exposed as the feed's `seed`.
    seed: Annotated[int | None, Field(ge=0, lt=2**63)] = None
    time_scale: Annotated[float, Field(gt=0, le=1_000_000, description="market seconds per wall second")] = 1.0
    # Where the market clock starts: today's regular open (trading within seconds, whatever
    # the hour), today's pre-market open, the real time now, or a given date-time.
    start: Literal["open", "pre", "now"] | datetime = "open"
    # Wall seconds a closed stretch (night, weekend, holiday) lasts; None = its real length
    # at time_scale (a weekend at 60x would then take 56 minutes of nothing).
    closed_wall_s: Annotated[float | None, Field(ge=0, le=86400)] = 5.0
    # Upper bound of the expected events per wall second over all symbols (trades + quotes),
    # to protect the bus and browsers from a typo in a rate.
    max_events_per_sec: Annotated[float, Field(gt=0)] = 20_000.0
    calendar: CalendarConfig = CalendarConfig()
    factors: dict[str, FactorConfig] = Field(default_factory=dict)
    correlations: list[tuple[Symbol, Symbol, Annotated[float, Field(gt=-1, lt=1)]]] = Field(default_factory=list)
    volatility_regime: RegimeConfig | None = None
    defaults: SymbolDefaults = SymbolDefaults()
    microstructure: Microstructure = Microstructure()
    scenarios: list[Scenario] = Field(default_factory=list)
    symbols: Annotated[list[SymbolConfig], Field(min_length=1)]

    @field_validator("factors")
    @classmethod
    def _factor_names(cls, value: dict[str, FactorConfig]) -> dict[str, FactorConfig]:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"factor names are plain words like 'market' or 'tech', got {name!r}")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> MarketConfig:
        errors: Errors = []
        index = self._symbol_index(errors)
        paired = self._check_correlations(index, errors)
        self._check_loadings(paired, errors)
        self._check_rates(errors)
        self._check_regime(errors)
        self._check_scenarios(index, errors)
        raise_errors(errors)
        return self

    def symbol_names(self) -> list[str]:
        return [s.symbol for s in self.symbols]

    def resolved(self, position: int) -> ResolvedSymbol:
        """The symbol at `position` with every default filled in."""
        return ResolvedSymbol(self, self.symbols[position])

    def in_pairs(self) -> list[str]:
        """Symbols that take part in `correlations`, in the order of `symbols`."""
        named = {s for a, b, _ in self.correlations for s in (a, b)}
        return [s.symbol for s in self.symbols if s.symbol in named]

    def build(self) -> MarketFeed:
        from feeds.market import MarketFeed  # lazy: validating a config needs no simulator

        return MarketFeed(self)

    # -- rules ---------------------------------------------------------------------------

    def _symbol_index(self, errors: Errors) -> dict[str, int]:
        index: dict[str, int] = {}
        for j, spec in enumerate(self.symbols):
            if spec.symbol in index:
                errors.append(
                    (("symbols", j, "symbol"), f"symbol {spec.symbol} is listed twice in this feed", spec.symbol)
                )
            index.setdefault(spec.symbol, j)
        return index

    def _check_correlations(self, index: dict[str, int], errors: Errors) -> set[str]:
        seen: dict[frozenset[str], int] = {}
        for i, (a, b, _) in enumerate(self.correlations):
            for k, sym in ((0, a), (1, b)):
                if sym not in index:
                    errors.append((("correlations", i, k), f"{sym} is not a symbol of this feed", sym))
            if a == b:
                errors.append((("correlations", i, 1), "a symbol's correlation with itself is 1 by definition", b))
            key = frozenset((a, b))
            if key in seen:
                errors.append(
                    (("correlations", i), f"the pair {a}-{b} is already given by correlations[{seen[key]}]", [a, b])
                )
            seen.setdefault(key, i)
        paired = set(self.in_pairs())
        for sym in paired:
            if self.symbols[index[sym]].loadings:
                errors.append(
                    (
                        ("symbols", index[sym], "loadings"),
                        f"{sym} is in `correlations`; a symbol takes factor loadings or pairwise "
                        "correlations, not both",
                        None,
                    )
                )
        if not errors and paired:
            from feeds.engine import cholesky, correlation_matrix  # lazy: keeps the model light

            names = self.in_pairs()
            failed = cholesky(correlation_matrix(names, self.correlations))
            if isinstance(failed, int):
                errors.append(
                    (
                        ("correlations",),
                        "these correlations are not positive definite, so no set of returns can have them: "
                        f"{names[failed]}'s correlations with {', '.join(names[:failed])} contradict each other "
                        "(lower the larger ones, or model the group with factors)",
                        None,
                    )
                )
        return paired

    def _check_loadings(self, paired: set[str], errors: Errors) -> None:
        for key in self.defaults.loadings:
            if key not in self.factors:
                errors.append((("defaults", "loadings", key), self._unknown_factor(key), key))
        for j, spec in enumerate(self.symbols):
            for key in spec.loadings or {}:
                if key not in self.factors:
                    errors.append((("symbols", j, "loadings", key), self._unknown_factor(key), key))
            if spec.symbol in paired:
                continue
            sym = ResolvedSymbol(self, spec)
            systematic = sum(
                (beta * self.factors[k].volatility) ** 2 for k, beta in sym.loadings.items() if k in self.factors
            )
            if systematic > sym.volatility**2 * (1 + 1e-9):
                where: tuple[str | int, ...] = ("symbols", j)
                if spec.loadings is not None:
                    where = (*where, "loadings")
                errors.append(
                    (
                        where,
                        f"the factors alone give {spec.symbol} a volatility of {math.sqrt(systematic):.4f}, "
                        f"above its volatility {sym.volatility:g}; lower the loadings or raise the volatility",
                        None,
                    )
                )

    def _unknown_factor(self, key: str) -> str:
        known = ", ".join(sorted(self.factors)) or "none"
        return f"unknown factor {key!r} (the feed's factors: {known})"

    def _check_rates(self, errors: Errors) -> None:
        total = 0.0
        for spec in self.symbols:
            sym = ResolvedSymbol(self, spec)
            total += sym.trades_per_sec * (1 + sym.quotes_per_trade)
        if total > self.max_events_per_sec:
            errors.append(
                (
                    ("symbols",),
                    f"the symbols' rates add up to about {total:,.0f} events per second, above "
                    f"max_events_per_sec ({self.max_events_per_sec:,.0f})",
                    None,
                )
            )

    def _check_regime(self, errors: Errors) -> None:
        regime = self.volatility_regime
        if regime and regime.leverage != 0 and regime.factor not in self.factors:
            errors.append(
                (
                    ("volatility_regime", "factor"),
                    f"leverage needs a factor to correlate with; {self._unknown_factor(regime.factor)}",
                    regime.factor,
                )
            )

    def _check_scenarios(self, index: dict[str, int], errors: Errors) -> None:
        calendar = self.calendar.build()
        halts: dict[str, list[tuple[float, float, int]]] = {}
        for i, scenario in enumerate(self.scenarios):
            for k, sym in enumerate(scenario.symbols or ()):
                if sym not in index:
                    errors.append((("scenarios", i, "symbols", k), f"{sym} is not a symbol of this feed", sym))
            if scenario.factor is not None and scenario.factor not in self.factors:
                errors.append((("scenarios", i, "factor"), self._unknown_factor(scenario.factor), scenario.factor))
            problem = _outside_sessions(calendar, scenario.at)
            if problem:
                errors.append((("scenarios", i, "at"), problem, None))
            if scenario.action == "halt" and scenario.duration_s:
                start = float(_time_of_day(calendar, scenario.at))
                for sym in scenario.symbols or ():
                    for begin, end, other in halts.get(sym, []):
                        if start < end and begin < start + scenario.duration_s:
                            errors.append(
                                (("scenarios", i, "at"), f"{sym}'s halt overlaps the one in scenarios[{other}]", None)
                            )
                    halts.setdefault(sym, []).append((start, start + scenario.duration_s, i))


class ResolvedSymbol:
    """A symbol's effective settings: its own value where given, else the feed's default."""

    def __init__(self, feed: MarketConfig, spec: SymbolConfig) -> None:
        d = feed.defaults
        self.spec = spec
        self.symbol = spec.symbol
        self.volatility = d.volatility if spec.volatility is None else spec.volatility
        self.drift = d.drift if spec.drift is None else spec.drift
        self.tick_size: Decimal | str = d.tick_size if spec.tick_size is None else spec.tick_size
        self.loadings = dict(d.loadings if spec.loadings is None else spec.loadings)
        self.jumps = d.jumps if spec.jumps is None else spec.jumps
        self.trades_per_sec = d.trades_per_sec if spec.trades_per_sec is None else spec.trades_per_sec
        self.quotes_per_trade = d.quotes_per_trade if spec.quotes_per_trade is None else spec.quotes_per_trade
        self.spread_bps = d.spread_bps if spec.spread_bps is None else spec.spread_bps
        self.min_spread_ticks = d.min_spread_ticks if spec.min_spread_ticks is None else spec.min_spread_ticks
        self.prev_close = spec.price if spec.prev_close is None else spec.prev_close


def _time_of_day(calendar: Calendar, at: int | datetime) -> int:
    if isinstance(at, int):
        return at
    local = at.astimezone(calendar.zone) if at.tzinfo else at
    return local.hour * 3600 + local.minute * 60 + local.second


def _outside_sessions(calendar: Calendar, at: int | datetime) -> str | None:
    """Why a scenario time can never fire, or None when it is inside a session."""
    seconds = _time_of_day(calendar, at)
    if not any(start <= seconds < end for _, start, end in calendar.sessions):
        spans = ", ".join(f"{format_time_of_day(a)}-{format_time_of_day(b)}" for _, a, b in calendar.sessions)
        return f"{format_time_of_day(seconds)} is outside every session ({spans})"
    if isinstance(at, datetime):
        day = (at.astimezone(calendar.zone) if at.tzinfo else at).date()
        if not calendar.is_trading_day(day):
            return f"{day} is not a trading day"
    return None
