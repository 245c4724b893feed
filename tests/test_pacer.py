"""The pacer: when it paces, how long its beat is, and that each connection is woken once per beat."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.bus.memory import MemoryBus
from service.config import StreamSettings
from service.hub import WAKE_GROUPS, Hub
from service.pacer import WINDOW_S, Pacer


class FakeSession:
    def __init__(self, name: str, group: int = 0, *, waiting: bool = True) -> None:
        self.peer = name
        self.group = group
        self.inbox = ["chunk"] if waiting else []  # what the hub handed over
        self.pokes: list[float] = []
        self.failed: str | None = None

    def poke(self) -> None:
        self.pokes.append(asyncio.get_running_loop().time() if _loop_running() else 0.0)

    def fail(self, reason: str) -> None:
        self.failed = reason


class BrokenSession(FakeSession):
    def poke(self) -> None:
        raise RuntimeError("boom")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Clocks:
    """Wall and CPU clocks moved by hand: `run(seconds, busy)` spends busy * seconds of CPU."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def run(self, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy


class FakeHub:
    """What the pacer uses of the hub: the `deferred` switch, and handing over a group's chunks.

    `held`: sessions whose group holds a chunk for them, put into their inbox on release.
    """

    def __init__(self, held: list[FakeSession] | None = None) -> None:
        self.deferred = False
        self.released: list[int] = []
        self.released_at: list[float] = []
        self.held = held or []

    def release(self, group: int) -> None:
        self.released.append(group)
        self.released_at.append(asyncio.get_running_loop().time() if _loop_running() else 0.0)
        for session in self.held:
            if session.group == group:
                session.inbox.append("chunk")


def fake_hub() -> Any:
    return FakeHub()


def make(connections: int, clocks: Clocks, **stream: Any) -> tuple[Pacer, set[Any], Any]:
    hub = fake_hub()
    sessions: set[Any] = {FakeSession(f"c{i}", i % WAKE_GROUPS) for i in range(connections)}
    settings = StreamSettings(**stream)
    pacer = Pacer(settings, sessions, hub, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    return pacer, sessions, hub


def test_few_connections_within_the_frame_budget_are_not_paced() -> None:
    """Under 1 ms of frame budget per connection, every event goes out at once (pace 0)."""
    clocks = Clocks()
    pacer, _, hub = make(5, clocks, max_frames_per_s=10_000)  # 0.5 ms per connection
    clocks.run(WINDOW_S * 1.1, busy=1.0)
    assert pacer.decide() is False
    assert pacer.pace_s == 0.0
    assert hub.deferred is False


def test_past_the_frame_budget_pacing_starts_and_the_hub_defers() -> None:
    """Connections / max_frames_per_s >= 1 ms: paced, on a beat no shorter than that floor."""
    clocks = Clocks()
    pacer, sessions, hub = make(3, clocks, max_frames_per_s=100, pace_ms=10, max_pace_ms=50)
    assert pacer.decide() is True
    assert hub.deferred is True
    assert pacer.pace_s == 0.03  # 3 connections at 100 frames/s: 30 ms, above pace_ms
    sessions.clear()
    assert pacer.decide() is False
    assert hub.deferred is False


def test_stopping_pacing_pokes_every_session_and_stops_deferring() -> None:
    """What was held for the next beat goes out when pacing stops."""
    clocks = Clocks()
    pacer, sessions, hub = make(2, clocks, max_frames_per_s=100)
    pacer.decide()
    assert hub.deferred is True
    pacer._settings = StreamSettings(max_frames_per_s=1_000_000)
    assert pacer.decide() is False
    assert hub.deferred is False
    assert all(len(s.pokes) == 1 for s in sessions)


def test_a_busy_process_stretches_the_beat_and_an_idle_one_shrinks_it() -> None:
    """Over 95 % busy the beat grows up to max_pace_ms; under 85 % it comes back to pace_ms."""
    clocks = Clocks()
    pacer, _, _ = make(1, clocks, max_frames_per_s=1000, pace_ms=10, max_pace_ms=40)
    pacer.decide()
    beats = []
    for _ in range(12):
        clocks.run(WINDOW_S * 1.1, busy=0.97)
        pacer.decide()
        beats.append(pacer.beat)
    assert beats == sorted(beats)
    assert beats[0] > 0.01
    assert beats[-1] == 0.04
    for _ in range(12):
        clocks.run(WINDOW_S * 1.1, busy=0.3)
        pacer.decide()
    assert pacer.beat == 0.01


def test_the_beat_holds_between_the_thresholds() -> None:
    """Between 85 % and 95 % busy the beat neither grows nor shrinks; at 80 % it shrinks.

    The band sits high: the beat is every client's wait, so spare CPU goes into a shorter one.
    """
    clocks = Clocks()
    pacer, _, _ = make(1, clocks, max_frames_per_s=1000, pace_ms=10, max_pace_ms=40)
    pacer.decide()
    pacer.beat = 0.02
    for _ in range(10):
        clocks.run(WINDOW_S * 1.1, busy=0.9)
        pacer.decide()
    assert pacer.beat == 0.02
    for _ in range(2):  # the busy share is smoothed: 0.85, then 0.825
        clocks.run(WINDOW_S * 1.1, busy=0.8)
        pacer.decide()
    assert pacer.beat < 0.02


async def test_a_beat_wakes_every_connection_once_spread_over_the_beat() -> None:
    """Connections are woken in slices across the beat, not all at one instant, each group's chunks first."""
    loop = asyncio.get_running_loop()
    sessions: set[Any] = {FakeSession(f"c{i}", i % WAKE_GROUPS) for i in range(40)}
    hub = fake_hub()
    pacer = Pacer(StreamSettings(max_frames_per_s=1000, pace_ms=40), sessions, hub)
    assert pacer.decide() is True
    started = loop.time()
    await pacer.beat_once()
    assert loop.time() - started >= 0.035
    pokes = sorted(p for s in sessions for p in s.pokes)
    assert len(pokes) == 40 and all(len(s.pokes) == 1 for s in sessions)
    assert hub.deferred is True
    assert pokes[-1] - pokes[0] >= 0.02  # spread: the last slice is woken well after the first
    # Every wake group's chunks are handed over once, before its members take them.
    assert sorted(hub.released) == list(range(WAKE_GROUPS))
    released = dict(zip(hub.released, hub.released_at, strict=True))
    assert all(released[s.group] <= s.pokes[0] for s in sessions)


async def test_a_beat_wakes_only_connections_the_hub_handed_something() -> None:
    """A connection with nothing in its inbox once its group is handed over is not woken."""
    idle, busy = FakeSession("idle", 0, waiting=False), FakeSession("busy", 0)
    held = FakeSession("held", 1, waiting=False)  # its chunks wait in its group until the beat
    hub = FakeHub(held=[held])
    pacer = Pacer(StreamSettings(max_frames_per_s=100, pace_ms=2), {idle, busy, held}, hub)
    pacer.decide()
    await pacer.beat_once()
    assert idle.pokes == [] and len(busy.pokes) == 1 and len(held.pokes) == 1


async def test_a_failing_hand_over_never_leaves_the_hub_deferring() -> None:
    """The real hub's hand-over raising: the pacer logs, goes on, and the hub does not stay deferred."""
    hub = Hub(MemoryBus(100), batched=True)

    def broken(group: int) -> None:
        raise RuntimeError("hand-over failed")

    hub.release = broken  # type: ignore[method-assign]
    sessions: set[Any] = {FakeSession(f"c{i}", i % WAKE_GROUPS) for i in range(20)}
    pacer = Pacer(StreamSettings(max_frames_per_s=100, pace_ms=10), sessions, hub)
    task = asyncio.create_task(pacer.run())
    await asyncio.sleep(0.3)
    assert not task.done()  # still pacing, or trying to
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert hub.deferred is False


async def test_a_session_that_fails_when_woken_is_closed_and_the_others_still_get_theirs() -> None:
    """One broken connection does not stop the beat for the others."""
    sessions: set[Any] = {FakeSession("ok1"), BrokenSession("bad"), FakeSession("ok2")}
    hub = fake_hub()
    pacer = Pacer(StreamSettings(max_frames_per_s=100, pace_ms=2), sessions, hub)
    pacer.decide()
    await pacer.beat_once()
    for session in sessions:
        if isinstance(session, BrokenSession):
            assert session.failed == "delivery failed"
        else:
            assert len(session.pokes) == 1 and session.failed is None


async def test_a_failing_pacer_stops_deferring_and_runs_again() -> None:
    """A failure mid-beat is logged, the hub goes back to handing events over at once, and pacing resumes."""
    sessions: set[Any] = {FakeSession("c0")}
    hub = fake_hub()
    pacer = Pacer(StreamSettings(max_frames_per_s=100, pace_ms=2), sessions, hub)
    failures = 0
    beat_once = pacer.beat_once

    async def flaky() -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            assert hub.deferred is True
            raise RuntimeError("boom")
        await beat_once()

    pacer.beat_once = flaky  # type: ignore[method-assign]
    task = asyncio.create_task(pacer.run())
    await asyncio.sleep(0.05)
    assert failures == 1
    assert hub.deferred is False and pacer.paced is False  # not left deferring with nobody to wake
    await asyncio.sleep(0.15)
    assert hub.deferred is True and pacer.paced is True  # and back at work
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert hub.deferred is False  # cancelled: nothing left waiting for a beat


async def test_beats_keep_their_own_schedule_when_the_loop_runs_late() -> None:
    """A late wake-up delays that beat only: the next starts when it was due, so lateness does not add up.

    The last wake group's session blocks the loop for 8 ms, past its beat's end, as a busy
    loop would.
    """

    class Stalling(FakeSession):
        def poke(self) -> None:
            super().poke()
            time.sleep(0.008)

    sessions: set[Any] = {FakeSession(f"c{i}", i) for i in range(WAKE_GROUPS - 1)}
    sessions.add(Stalling("late", WAKE_GROUPS - 1))
    first = next(s for s in sessions if s.group == 0)
    pacer = Pacer(StreamSettings(max_frames_per_s=1000, pace_ms=20, max_pace_ms=20), sessions, fake_hub())
    assert pacer.decide() is True
    for _ in range(6):
        await pacer.beat_once()
    # Six beats of 20 ms: the first group's wakes are five beats apart, give or take one
    # late wake-up (with every beat starting late they would be 30 ms or more further apart).
    assert 5 * 0.02 - 0.001 <= first.pokes[-1] - first.pokes[0] < 5 * 0.02 + 0.012
