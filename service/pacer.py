"""When queued events leave for the clients: at once, or on a beat shared by every connection.

A frame costs ~10 us of server CPU whatever it holds (mostly the socket write: on loopback
the kernel's whole TCP path), so with many clients frames rather than events use up the
core. The pacer then has the hub defer the hand-over (events wait in the hub's wake-group
feeds, see hub.GroupFeed) and wakes each client's session once per beat to take and send
everything that arrived meanwhile: fewer, bigger frames.

- **When.** While the frame budget (`max_frames_per_s`) leaves less than 1 ms per
  connection. With fewer clients every event goes out at once: there, producing events,
  not frames, is what fills the core (measured: pacing 100 busy clients held less).
- **How long a beat.** `pace_ms`, stretched while the process is over 95 % busy (longer
  beats, fewer frames) up to `max_pace_ms`, and shrunk back when it is under 85 %. The
  busy share is smoothed over a few windows so one noisy window does not swing the beat.
  The band sits high because the beat is the latency: at 1,000 clients a band of 75-90 %
  left ~10 % of the core idle and every client's wait a few ms longer
  (docs/performance.md, "A hotter beat").
- **Spread over the beat.** Connections are woken in slices a few ms apart, by the wake
  group the hub gave each (see hub.GroupFeed), not all at once: each still gets one frame
  per beat, but a thousand frames do not leave in one block that holds up the feed and
  makes the last client of the block wait for the first 999. An event then waits about one
  beat at most, whichever client it is for (a client that connects mid-beat, or whose group
  moves to another slice when the beat changes, may once wait up to two).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.hub import WAKE_GROUPS

if TYPE_CHECKING:
    from service.config import StreamSettings
    from service.hub import Hub
    from service.session import Session

log = logging.getLogger(__name__)

WINDOW_S = 0.1  # how often the busy share is measured
SLICE_S = 0.002  # connections woken together, at most every SLICE_S within a beat
BUSY, IDLE = 0.95, 0.85  # stretch the beat while the process is over BUSY, shrink it under IDLE


class Pacer:
    """Owns the hub's deferred hand-over, and wakes the sessions while it is on."""

    def __init__(
        self,
        settings: StreamSettings,
        connections: set[Session],
        hub: Hub,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._settings = settings
        self._connections = connections
        self._hub = hub
        self._clock = clock
        self._cpu_clock = cpu_clock
        self.shortest = settings.pace_ms / 1000
        self.longest = max(settings.pace_ms, settings.max_pace_ms) / 1000
        self.beat = self.shortest
        self.paced = False
        self.busy = 0.0  # smoothed share of a core the process used
        self._next_beat = 0.0  # when the next beat is due to start (beat_once)
        self._mark_wall = clock()
        self._mark_cpu = cpu_clock()

    @property
    def pace_s(self) -> float:
        """The current beat, 0 when every event goes out at once (for /healthz)."""
        return self.beat if self.paced else 0.0

    def _measure(self) -> None:
        now = self._clock()
        elapsed = now - self._mark_wall
        if elapsed < WINDOW_S:
            return
        cpu = self._cpu_clock()
        share = (cpu - self._mark_cpu) / elapsed
        self._mark_wall, self._mark_cpu = now, cpu
        self.busy = share if self.busy == 0.0 else 0.5 * self.busy + 0.5 * share
        if self.paced:
            if self.busy > BUSY:
                self.beat *= 1.25
            elif self.busy < IDLE:
                self.beat *= 0.8

    def _over_budget(self) -> float:
        """The shortest beat the frame budget allows, when that is past 1 ms; else 0."""
        floor = len(self._connections) / self._settings.max_frames_per_s
        return floor if floor >= 0.001 else 0.0

    def decide(self) -> bool:
        """Measure, then start or stop pacing and fix the beat; True while pacing."""
        self._measure()
        floor = self._over_budget()
        if floor and not self.paced:
            self._set(True)
        elif not floor and self.paced:
            self._set(False)
        self.beat = min(max(self.beat, floor, self.shortest), self.longest)
        return self.paced

    def _set(self, paced: bool) -> None:
        self.paced = paced
        self._hub.deferred = paced  # off: the hub first hands over what it held for the groups
        log.debug("Pacing %s (busy %.0f %%)", "on" if paced else "off", self.busy * 100)
        if not paced:
            # Whatever was held for the next beat goes out now, and from here on at once.
            for session in list(self._connections):
                _poke(session)

    async def run(self) -> None:
        """Pace until cancelled.

        While the hub defers, only the pacer moves events to the clients: a failure here is
        logged and pacing switched off (every event goes out at once) before trying again,
        and so is the end of this task, never leaving the hub deferring with nobody to wake.
        """
        try:
            while True:
                try:
                    if self.decide():
                        await self.beat_once()
                    else:
                        await asyncio.sleep(WINDOW_S / 2)
                except Exception:
                    log.exception("The pacer failed; events go out at once until it runs again")
                    self._give_up()
                    await asyncio.sleep(WINDOW_S)
        finally:
            self._give_up()

    def _give_up(self) -> None:
        if not self.paced:
            return
        try:
            self._set(False)
        except Exception:
            log.exception("Stopping the pacer failed")
            self.paced = False
            if self._hub.deferred:  # the hub's setter stops deferring even when handing over fails
                try:
                    self._hub.deferred = False
                except Exception:
                    log.exception("Handing over what the wake groups held failed")

    async def beat_once(self) -> None:
        """Wake every connection once, spread over one beat, a slice of wake groups at a time."""
        groups: list[list[Session]] = [[] for _ in range(WAKE_GROUPS)]
        for session in self._connections:
            groups[session.group].append(session)
        beat = self.beat
        slices = max(1, min(WAKE_GROUPS, int(beat / SLICE_S)))
        # Beats follow each other on their own schedule: this one starts where the last was
        # due to end, not when its last sleep came back. Starting late would add the loop's
        # lateness (~1.5 ms under load) to every client's wait, beat after beat. After a
        # stall longer than a beat the schedule starts over from now.
        now = self._clock()
        started = self._next_beat if now - self._next_beat < beat else now
        self._next_beat = started + beat
        for index in range(slices):
            for group in range(index, WAKE_GROUPS, slices):
                # The group's chunks into its members' inboxes (see hub.GroupFeed), then
                # each member that got some takes them. The others have nothing to do: a
                # session that queues anything else wakes its writer itself.
                self._hub.release(group)
                for session in groups[group]:
                    if session.inbox:
                        _poke(session)
            # Sleep to this slice's end on the beat's own schedule, so the slices' own
            # CPU time does not stretch the beat.
            await asyncio.sleep(max(0.0, started + beat * (index + 1) / slices - self._clock()))


def _poke(session: Session) -> None:
    try:
        session.poke()
    except Exception:
        log.exception("Delivering to client %s failed; closing it", session.peer)
        try:
            session.fail("delivery failed")
        except Exception:
            log.exception("Closing client %s failed", session.peer)
