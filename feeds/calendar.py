"""Trading days and sessions in the exchange's time zone, as a timeline of segments.

A segment is a stretch of market time with one session kind: `pre`, `regular`, `post`, or
`closed` (nights, weekends, holidays). Times are Unix seconds; local session times are
resolved through `zoneinfo`, so a session starts at 09:30 New York time on both sides of a
daylight-saving change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from feeds.holidays import nyse_holidays
from feeds.schema import StrictModel, TimeOfDay, format_time_of_day, raise_errors

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SessionKind = Literal["pre", "regular", "post", "closed"]
# Session kind to the status a client sees on the wire (feeds.base.STATUSES).
STATUS_OF: dict[str, str] = {"pre": "pre", "regular": "open", "post": "post", "closed": "closed"}
# How far ahead to look for the next trading day before calling the calendar empty.
_MAX_GAP_DAYS = 31


class RegularSession(StrictModel):
    start: TimeOfDay = 9 * 3600 + 30 * 60
    end: TimeOfDay = 16 * 3600


class ExtendedSession(StrictModel):
    start: TimeOfDay
    end: TimeOfDay
    # Arrival rate relative to the regular session's average.
    activity: Annotated[float, Field(gt=0, le=10)] = 0.15
    # Spreads widen outside regular hours: liquidity is thin.
    spread_mult: Annotated[float, Field(ge=1, le=100)] = 3.0
    # Volatility per second relative to the regular session's average.
    volatility_mult: Annotated[float, Field(ge=0, le=10)] = 0.5


class Sessions(StrictModel):
    pre: ExtendedSession | None = ExtendedSession.model_validate({"start": "04:00", "end": "09:30", "activity": 0.15})
    regular: RegularSession = RegularSession()
    post: ExtendedSession | None = ExtendedSession.model_validate({"start": "16:00", "end": "20:00", "activity": 0.10})

    @model_validator(mode="after")
    def _ordered(self) -> Sessions:
        errors: list[tuple[tuple[str | int, ...], str, object]] = []
        previous: tuple[str, int] | None = None
        for name in ("pre", "regular", "post"):
            session: ExtendedSession | RegularSession | None = getattr(self, name)
            if session is None:
                continue
            if session.start >= session.end:
                errors.append(
                    (
                        (name, "end"),
                        f"the session must end after it starts ({format_time_of_day(session.start)})",
                        format_time_of_day(session.end),
                    )
                )
            if previous and session.start < previous[1]:
                errors.append(
                    (
                        (name, "start"),
                        f"{name} must start at or after {previous[0]} ends ({format_time_of_day(previous[1])})",
                        format_time_of_day(session.start),
                    )
                )
            previous = (name, session.end)
        raise_errors(errors)
        return self


def _weekdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


def _nyse_rules() -> list[Literal["nyse"] | date]:
    return ["nyse"]


class CalendarConfig(StrictModel):
    timezone: str = "America/New_York"
    trading_days: Annotated[list[Weekday], Field(min_length=1)] = Field(default_factory=_weekdays)
    # `nyse` adds the NYSE holiday rules for every year; dates add one-off closures.
    holidays: list[Literal["nyse"] | date] = Field(default_factory=_nyse_rules)
    sessions: Sessions = Sessions()
    # Intraday U-shape: variance and activity at the open and close relative to the session
    # average (1 = flat). Below 3 so that midday stays positive.
    open_close_mult: Annotated[float, Field(ge=1, lt=3)] = 2.0
    # Variance of the overnight gap, as a fraction of one regular session's variance.
    overnight_var_fraction: Annotated[float, Field(ge=0, le=10)] = 0.2
    # Regular sessions per year, to turn annualised volatility into per-second variance.
    days_per_year: Annotated[int, Field(ge=1, le=366)] = 252

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (expected an IANA name like America/New_York)") from None
        return value

    @field_validator("trading_days")
    @classmethod
    def _unique_days(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a weekday is listed twice")
        return value

    def build(self) -> Calendar:
        return Calendar(self)


@dataclass(frozen=True, slots=True)
class Segment:
    kind: SessionKind
    start: float  # Unix seconds
    end: float
    day: date  # the trading day the segment belongs to (for `closed`: the one it leads to)
    new_day: bool  # the first session of its trading day: the day rolls over at `start`


class Calendar:
    """Sessions of one exchange; all queries are in Unix seconds."""

    def __init__(self, config: CalendarConfig) -> None:
        self.config = config
        self.zone = ZoneInfo(config.timezone)
        self._weekdays = frozenset(WEEKDAYS.index(d) for d in config.trading_days)
        self._holidays = frozenset(d for d in config.holidays if isinstance(d, date))
        self._nyse = "nyse" in config.holidays
        sessions = config.sessions
        named: list[tuple[SessionKind, ExtendedSession | RegularSession | None]] = [
            ("pre", sessions.pre),
            ("regular", sessions.regular),
            ("post", sessions.post),
        ]
        self.sessions = [(kind, s.start, s.end) for kind, s in named if s is not None]
        self.regular_seconds = sessions.regular.end - sessions.regular.start
        # Annualisation: seconds of regular trading per year.
        self.year_seconds = float(config.days_per_year * self.regular_seconds)

    def is_trading_day(self, day: date) -> bool:
        if day.weekday() not in self._weekdays or day in self._holidays:
            return False
        return not (self._nyse and day in nyse_holidays(day.year))

    def local_date(self, ts: float) -> date:
        return datetime.fromtimestamp(ts, self.zone).date()

    def at(self, day: date, seconds_of_day: int) -> float:
        """Unix time of a local time of day on `day` (24:00 is the next midnight)."""
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return (midnight + timedelta(seconds=seconds_of_day)).timestamp()

    def next_trading_day(self, after: date) -> date:
        day = after
        for _ in range(_MAX_GAP_DAYS * 12):
            day += timedelta(days=1)
            if self.is_trading_day(day):
                return day
        raise RuntimeError(f"calendar {self.config.timezone} has no trading day after {after}")

    def trading_day_on_or_before(self, day: date) -> date:
        for _ in range(_MAX_GAP_DAYS * 12):
            if self.is_trading_day(day):
                return day
            day -= timedelta(days=1)
        raise RuntimeError(f"calendar {self.config.timezone} has no trading day before {day}")

    def session_start(self, day: date, kind: SessionKind) -> float:
        for name, start, _ in self.sessions:
            if name == kind:
                return self.at(day, start)
        raise ValueError(f"the calendar has no {kind} session")

    def day_segments(self, day: date) -> list[Segment]:
        """The sessions of a trading day with closed gaps between them, in order."""
        out: list[Segment] = []
        for kind, start, end in self.sessions:
            begin = self.at(day, start)
            if out and out[-1].end < begin:
                out.append(Segment("closed", out[-1].end, begin, day, new_day=False))
            out.append(Segment(kind, begin, self.at(day, end), day, new_day=not out))
        return out

    def segments_from(self, ts: float) -> Iterator[Segment]:
        """The segment containing `ts`, then every later one, without end."""
        # Start a trading day early: before its first session, `ts` is in the previous night.
        day = self.trading_day_on_or_before(self.local_date(ts) - timedelta(days=1))
        segments = self.day_segments(day)
        while True:
            following = self.next_trading_day(day)
            upcoming = self.day_segments(following)
            segments.append(Segment("closed", segments[-1].end, upcoming[0].start, following, new_day=False))
            for segment in segments:
                if segment.end > ts:
                    yield segment
            day, segments = following, upcoming
