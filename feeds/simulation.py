"""The simulated market as pure code: market time in, ticks out. No I/O, no sleeping.

`advance(until, emit)` generates every event before `until` (market time, Unix seconds):
Poisson arrivals per symbol (thinned to follow the intraday U-shape), session boundaries
with their status changes and day rollovers, and scripted scenarios. The same config, seed
and start give the same ticks in the same order, on any machine.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal

from feeds.base import Emit, NewDay, Quote, Status, Trade
from feeds.calendar import STATUS_OF, Calendar, Segment
from feeds.engine import Driver, Engine, PriceState, ShockPath, cholesky, correlation_matrix
from feeds.market_config import MarketConfig, Scenario
from feeds.microstructure import Book, round_lot
from feeds.rng import Uniform, stream
from feeds.schema import resolve_tick

_INF = math.inf
# Why a symbol's status changed, as shown to clients.
_REASONS = {
    "pre": "pre-market session",
    "open": "regular session",
    "post": "after-hours session",
    "closed": "market closed",
}


class _Symbol:
    __slots__ = (
        "arrive",
        "book",
        "close",
        "halted",
        "index",
        "inv_unit",
        "lam",
        "p_trade",
        "pending",
        "price",
        "status",
        "symbol",
    )

    def __init__(self, index: int, symbol: str, price: PriceState, book: Book, arrive: Uniform) -> None:
        self.index = index
        self.symbol = symbol
        self.price = price
        self.book = book
        self.arrive = arrive
        self.inv_unit = 0.0
        self.lam = 0.0  # events per market second at activity 1 (trades + quotes)
        self.p_trade = 1.0
        self.halted = False
        self.pending = False  # has an arrival in the heap
        self.status = ""
        self.close = 0  # last regular-session trade, in units: the next day's previous close


class Simulation:
    def __init__(self, config: MarketConfig, seed: int, start: float) -> None:
        self.config = config
        self.seed = seed
        self.calendar: Calendar = config.calendar.build()
        self.now = start
        self._year = self.calendar.year_seconds
        cal = config.calendar
        mult = cal.open_close_mult
        # s(u) = a + b (2u - 1)^2 with mean 1 over the session and s(0) = s(1) = mult.
        self._b = 1.5 * (mult - 1.0)
        self._a = 1.0 - self._b / 3.0
        self._peak = mult
        self._overnight = cal.overnight_var_fraction / cal.days_per_year
        self._drivers: dict[str, Driver] = {}
        self._shocks: dict[str, ShockPath] = {}
        self.engine = self._build_engine()
        self._symbols = self._build_symbols()
        self._by_name = {s.symbol: s for s in self._symbols}
        self._heap: list[tuple[float, int]] = []
        self._timers: list[tuple[float, int, str, object]] = []
        self._timer_seq = 0
        self._vol_token = 0
        self._queued_day: date | None = None  # the last day whose scenarios are queued
        self._segments: Iterator[Segment] = self.calendar.segments_from(start)
        self._enter(next(self._segments), start)

    # -- construction ----------------------------------------------------------------------

    def _uniform(self, *parts: str) -> Uniform:
        return stream(self.seed, self.config.name, *parts).random

    def _build_engine(self) -> Engine:
        config = self.config
        for name in config.factors:
            self._drivers[name] = Driver(self._uniform("factor", name))
            self._shocks[name] = ShockPath()
        regime = config.volatility_regime
        if regime is None:
            return Engine()
        kappa = math.log(2.0) / (regime.half_life_s / self._year)
        return Engine(
            regime=(kappa, regime.vol_of_vol, regime.leverage),
            regime_driver=self._drivers.get(regime.factor),
            regime_uniform=self._uniform("regime"),
            regime_step=regime.half_life_s / 100 / self._year,
        )

    def _build_symbols(self) -> list[_Symbol]:
        config = self.config
        paired = config.in_pairs()
        lower = cholesky(correlation_matrix(paired, config.correlations)) if paired else []
        assert not isinstance(lower, int), "the config validator rejects matrices that are not positive definite"
        pair_drivers = [Driver(self._uniform("pairs", name)) for name in paired]
        micro = config.microstructure
        out = []
        for index, spec in enumerate(config.symbols):
            sym = config.resolved(index)
            loads: list[tuple[Driver, float]] = []
            shocks: list[tuple[ShockPath, float]] = []
            if sym.symbol in paired:
                row = lower[paired.index(sym.symbol)]
                loads = [(pair_drivers[k], sym.volatility * row[k]) for k in range(len(row)) if row[k] != 0.0]
            else:
                for name, beta in sym.loadings.items():
                    loads.append((self._drivers[name], beta * config.factors[name].volatility))
                    shocks.append((self._shocks[name], beta))
            jumps = sym.jumps
            price = PriceState(
                price=spec.price,
                volatility=sym.volatility,
                drift=sym.drift,
                loads=loads,
                shocks=shocks,
                jumps=(jumps.rate_per_year, jumps.mean_pct / 100, jumps.stdev_pct / 100) if jumps else None,
                uniform=self._uniform(sym.symbol, "price"),
            )
            unit, sub_penny = resolve_tick(sym.tick_size, spec.price)
            lot = round_lot(spec.price) if micro.lot == "auto" else micro.lot
            book = Book(
                uniform=self._uniform(sym.symbol, "book"),
                sub_penny=sub_penny,
                unit=float(unit),
                price=spec.price,
                spread_bps=sym.spread_bps,
                min_ticks=sym.min_spread_ticks,
                widen_prob=micro.widen_prob,
                buy_prob=micro.buy_prob,
                midpoint_prob=micro.midpoint_prob,
                lot=lot,
                odd_lot_prob=micro.trade_size.odd_lot_prob,
                trade_notional=micro.trade_size.median_notional,
                trade_sigma=micro.trade_size.sigma,
                quote_notional=micro.quote_size.median_notional,
                quote_sigma=micro.quote_size.sigma,
            )
            symbol = _Symbol(index, sym.symbol, price, book, self._uniform(sym.symbol, "arrivals"))
            symbol.inv_unit = 1.0 / float(unit)
            # Rates are per wall second; the simulation runs in market seconds.
            symbol.lam = sym.trades_per_sec * (1.0 + sym.quotes_per_trade) / config.time_scale
            symbol.p_trade = 1.0 / (1.0 + sym.quotes_per_trade)
            symbol.close = max(1, round(Decimal(str(sym.prev_close)) / unit))
            out.append(symbol)
        return out

    # -- public ------------------------------------------------------------------------------

    def start(self, emit: Emit) -> None:
        """Emit every symbol's initial status; call once, before `advance`."""
        ts = int(self.now * 1000)
        status = STATUS_OF[self._segment.kind]
        for s in self._symbols:
            s.status = status
            emit(Status(s.symbol, ts, status, _REASONS[status]))
        self._schedule_scenarios(self._segment.day, after=self.now)

    def next_time(self) -> float:
        """Market time of the next thing that will happen."""
        t = self._segment.end
        if self._heap and self._heap[0][0] < t:
            t = self._heap[0][0]
        if self._timers and self._timers[0][0] < t:
            t = self._timers[0][0]
        return t

    def advance(self, until: float, emit: Emit) -> None:
        """Generate everything that happens before market time `until`."""
        heap = self._heap
        timers = self._timers
        symbols = self._symbols
        pop, push = heapq.heappop, heapq.heappush
        while True:
            seg_end = self._segment.end
            limit = timers[0][0] if timers and timers[0][0] < seg_end else seg_end
            stop = until if until < limit else limit
            while heap and heap[0][0] < stop:
                t, i = pop(heap)
                s = symbols[i]
                if s.halted:
                    s.pending = False
                    continue
                self._event(s, t, emit)
                nxt = self._next_arrival(s, t)
                if nxt < seg_end:
                    push(heap, (nxt, i))
                else:
                    s.pending = False
            if limit >= until:
                self._clock_to(until)
                self.now = until
                return
            self._clock_to(limit)
            self.now = limit
            if timers and timers[0][0] <= limit and timers[0][0] < seg_end:
                _, _, kind, payload = heapq.heappop(timers)
                self._fire(kind, payload, emit)
            else:
                self._enter(next(self._segments), limit, emit)

    def price(self, symbol: str) -> float:
        """The model's (latent) price of `symbol` now, which the quotes straddle.

        For diagnostics and statistical tests: sampling it on a grid measures the model
        without the staleness of the last quote (the Epps effect of asynchronous prints).
        """
        s = self._by_name[symbol]
        self._clock_to(self.now)
        return math.exp(self.engine.update(s.price))

    def wall_seconds(self, start: float, end: float) -> float:
        """Wall time the market takes from `start` to `end` (for pacing)."""
        current = self._segment
        if current.start <= start and end <= current.end:  # the usual case, without the calendar
            return (end - start) / self._rate(current)
        wall = 0.0
        for segment in self.calendar.segments_from(start):
            a, b = max(start, segment.start), min(end, segment.end)
            if b > a:
                wall += (b - a) / self._rate(segment)
            if segment.end >= end:
                return wall
        return wall  # pragma: no cover - segments_from never ends

    def market_after(self, start: float, wall: float) -> float:
        """Market time reached `wall` wall seconds after market time `start`."""
        if wall <= 0.0:
            return start
        current = self._segment
        if current.start <= start < current.end:
            reached = start + wall * self._rate(current)
            if reached <= current.end:
                return reached
        t = start
        for segment in self.calendar.segments_from(start):
            rate = self._rate(segment)
            need = (segment.end - t) / rate
            if need > wall:
                return t + wall * rate
            wall -= need
            t = segment.end
        return t  # pragma: no cover - segments_from never ends

    # -- time ----------------------------------------------------------------------------------

    def _rate(self, segment: Segment) -> float:
        """Market seconds per wall second in a segment."""
        scale = self.config.time_scale
        closed_wall = self.config.closed_wall_s
        if segment.kind != "closed" or closed_wall is None:
            return scale
        if closed_wall == 0.0:
            return _INF
        return max(scale, (segment.end - segment.start) / closed_wall)

    def _enter(self, segment: Segment, at: float, emit: Emit | None = None) -> None:
        """Switch to `segment` at market time `at`: statuses, day rollover, new arrivals."""
        self._segment = segment
        self._seg_start = segment.start
        self._seg_len = segment.end - segment.start
        self._T0 = self.engine.T
        session = None
        if segment.kind in ("pre", "post"):
            session = getattr(self.config.calendar.sessions, segment.kind)
        self._activity = session.activity if session else (1.0 if segment.kind == "regular" else 0.0)
        self._spread_mult = session.spread_mult if session else 1.0
        # Per second of an extended session: its volatility multiplier squared, in years.
        self._var_rate = (session.volatility_mult**2 / self._year) if session else 0.0
        self._thin = segment.kind == "regular" and self._peak > 1.0
        if emit is None:  # the segment the simulation starts in
            self._schedule_all(at)
            return
        ts = int(at * 1000)
        if segment.new_day:
            self.engine.accrue(self._overnight)  # the overnight gap, correlated like any move
            self._T0 = self.engine.T
            for s in self._symbols:
                emit(NewDay(s.symbol, ts, s.close))
            self._schedule_scenarios(segment.day, after=at)
        status = STATUS_OF[segment.kind]
        for s in self._symbols:
            if not s.halted and s.status != status:
                s.status = status
                emit(Status(s.symbol, ts, status, _REASONS[status]))
        self._schedule_all(at)

    def _trading_time(self, tau: float) -> float:
        kind = self._segment.kind
        if kind == "regular":
            u = (tau - self._seg_start) / self._seg_len
            w = 2.0 * u - 1.0
            # Integral of the U-shape from the open: a u + b ((2u - 1)^3 + 1) / 6.
            profile = self._a * u + self._b * (w * w * w + 1.0) / 6.0
            return self._T0 + profile * self._seg_len / self._year
        if kind == "closed":
            return self._T0
        return self._T0 + (tau - self._seg_start) * self._var_rate

    def _clock_to(self, tau: float) -> None:
        engine = self.engine
        if tau > engine.tau:
            engine.accrue(self._trading_time(tau) - engine.T)
            engine.tau = tau

    # -- arrivals ------------------------------------------------------------------------------

    def _schedule_all(self, at: float) -> None:
        self._heap.clear()
        for s in self._symbols:
            s.pending = False
            if not s.halted:
                self._schedule(s, at)

    def _schedule(self, s: _Symbol, at: float) -> None:
        nxt = self._next_arrival(s, at)
        if nxt < self._segment.end:
            heapq.heappush(self._heap, (nxt, s.index))
            s.pending = True

    def _next_arrival(self, s: _Symbol, t: float) -> float:
        lam = s.lam * self._activity
        if lam <= 0.0:
            return _INF
        u = s.arrive
        if not self._thin:
            return t - math.log(1.0 - u()) / lam
        # Thinning (Lewis-Shedler): propose at the peak rate, keep with probability s(u)/peak.
        peak = self._peak
        lam_max = lam * peak
        end = self._segment.end
        start, length, a, b = self._seg_start, self._seg_len, self._a, self._b
        while True:
            t -= math.log(1.0 - u()) / lam_max
            if t >= end:
                return t
            w = 2.0 * (t - start) / length - 1.0
            if u() * peak < a + b * w * w:
                return t

    # -- events ----------------------------------------------------------------------------

    def _event(self, s: _Symbol, t: float, emit: Emit) -> None:
        self._clock_to(t)
        mid = math.exp(self.engine.update(s.price)) * s.inv_unit
        book = s.book
        bid, ask = book.quote_at(mid, self._spread_mult)
        ts = int(t * 1000)
        if s.arrive() < s.p_trade:
            if bid != book.bid or ask != book.ask:
                book.show(bid, ask)
                emit(Quote(s.symbol, ts, bid, book.bid_size, ask, book.ask_size))
            price, size = book.trade()
            emit(Trade(s.symbol, ts, price, size))
            if self._segment.kind == "regular":
                s.close = price
        else:
            book.show(bid, ask)
            emit(Quote(s.symbol, ts, bid, book.bid_size, ask, book.ask_size))

    def _quote_now(self, s: _Symbol, emit: Emit) -> None:
        """Show the symbol's quote at once (after a reopen or a jump)."""
        if s.halted or self._segment.kind == "closed":
            return
        self._clock_to(self.now)
        mid = math.exp(self.engine.update(s.price)) * s.inv_unit
        bid, ask = s.book.quote_at(mid, self._spread_mult)
        s.book.show(bid, ask)
        emit(Quote(s.symbol, int(self.now * 1000), bid, s.book.bid_size, ask, s.book.ask_size))

    # -- scenarios ---------------------------------------------------------------------------

    def _timer(self, at: float, kind: str, payload: object) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, kind, payload))

    def _schedule_scenarios(self, day: date, after: float) -> None:
        """Queue the scenarios of trading day `day` that fire at or after `after` (once per day)."""
        if day == self._queued_day:
            return  # a start at night already queued the coming day's
        self._queued_day = day
        for scenario in self.config.scenarios:
            if isinstance(scenario.at, int):
                at = self.calendar.at(day, scenario.at)
            elif day == self._scenario_day(scenario.at):
                at = self._scenario_time(scenario.at)
            else:
                continue
            if at >= after:
                self._timer(at, "scenario", scenario)

    def _scenario_time(self, at: datetime) -> float:
        return (at if at.tzinfo else at.replace(tzinfo=self.calendar.zone)).timestamp()

    def _scenario_day(self, at: datetime) -> date:
        return self.calendar.local_date(self._scenario_time(at))

    def _fire(self, kind: str, payload: object, emit: Emit) -> None:
        ts = int(self.now * 1000)
        if kind == "scenario":
            assert isinstance(payload, Scenario)
            self._start_scenario(payload, ts, emit)
        elif kind == "reopen":
            assert isinstance(payload, tuple)
            name, log_jump = payload
            s = self._by_name[name]
            s.halted = False
            self._clock_to(self.now)
            self.engine.update(s.price)
            s.price.x += log_jump
            status = STATUS_OF[self._segment.kind]
            s.status = status
            emit(Status(s.symbol, ts, status, "trading resumes"))
            self._quote_now(s, emit)
            if not s.pending:
                self._schedule(s, self.now)
        elif kind == "volatility_end" and payload == self._vol_token:
            self._clock_to(self.now)
            self.engine.set_scripted(1.0)

    def _start_scenario(self, scenario: Scenario, ts: int, emit: Emit) -> None:
        action = scenario.action
        if action == "halt":
            jump = math.log1p((scenario.reopen_jump_pct or 0.0) / 100)
            for name in scenario.symbols or ():
                s = self._by_name[name]
                s.halted = True
                s.status = "halted"
                emit(Status(name, ts, "halted", scenario.reason or "halted by scenario"))
                self._timer(self.now + (scenario.duration_s or 0.0), "reopen", (name, jump))
        elif action == "jump":
            for name in scenario.symbols or ():
                s = self._by_name[name]
                self._clock_to(self.now)
                self.engine.update(s.price)
                s.price.x += math.log1p((scenario.return_pct or 0.0) / 100)
                self._quote_now(s, emit)
        elif action == "factor_shock":
            over = scenario.over_s if scenario.over_s is not None else 60.0
            path = self._shocks[scenario.factor or ""]
            path.add(self.now, max(over, 1e-3), math.log1p((scenario.return_pct or 0.0) / 100))
        elif action == "volatility":
            self._clock_to(self.now)
            self.engine.set_scripted(scenario.multiplier or 1.0)
            self._vol_token += 1
            if scenario.duration_s:
                self._timer(self.now + scenario.duration_s, "volatility_end", self._vol_token)


def start_time(config: MarketConfig, calendar: Calendar, now: float) -> float:
    """Resolve the config's `start` against the wall clock's `now` (Unix seconds)."""
    start = config.start
    if isinstance(start, datetime):
        return (start if start.tzinfo else start.replace(tzinfo=calendar.zone)).timestamp()
    if start == "now":
        return now
    today = calendar.local_date(now)
    day = calendar.trading_day_on_or_before(today)
    if start == "pre" and config.calendar.sessions.pre is not None:
        return calendar.session_start(day, "pre")
    return calendar.session_start(day, "regular")
