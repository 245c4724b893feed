"""Moves sessions' frames into their sockets from event-loop callbacks: no task per connection.

A session that has something to send asks its pump to run; the scheduler runs every pump
that asked once per loop iteration, so the events of one hub flush leave as one frame per
client, written straight onto the socket (see service.ws_protocol). A pump stops at a full
socket buffer and runs again when it drains; meanwhile the session's outbox fills, and its
bounds (conflation, then close 4100) apply as they would with a blocked writer task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.session import Session
    from service.ws_protocol import DirectWriter

log = logging.getLogger(__name__)


class WriteScheduler:
    """The pumps that asked to run, run together at the next turn of the event loop."""

    def __init__(self) -> None:
        self._due: set[Pump] = set()
        self._scheduled = False

    def want(self, pump: Pump) -> None:
        self._due.add(pump)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        due, self._due = self._due, set()
        for pump in due:
            try:
                pump.run()
            except Exception:
                log.exception("Writing to client %s failed; closing it with 1011", pump.session.peer)
                pump.session.fail("internal error")


class Pump:
    """One connection's writer: drains the session's outbox into its socket while it takes frames."""

    __slots__ = ("_scheduler", "_timer", "session", "writer")

    def __init__(self, writer: DirectWriter, scheduler: WriteScheduler) -> None:
        self.writer = writer
        self._scheduler = scheduler
        self._timer: asyncio.TimerHandle | None = None
        self.session: Session  # set right after the session is built (it needs `want`)
        writer.on_drained(self.want)

    def want(self) -> None:
        self._scheduler.want(self)

    def run(self) -> None:
        session = self.session
        writer = self.writer
        sent = False
        while session.fatal is None and not writer.paused:
            frame, throttle_due = session.next_frame()
            if frame is None:
                if throttle_due is not None:
                    # A throttled stream holds an event until its interval ends.
                    if self._timer is not None:
                        self._timer.cancel()
                    self._timer = asyncio.get_running_loop().call_later(throttle_due, self.want)
                break
            if not writer.write_text(frame):
                break  # the connection is closing: the endpoint's reader sees it end
            sent = True
        if sent:
            session.last_sent = time.monotonic()

    def write_now(self, frame: str) -> bool:
        """Write one frame at once, out of the scheduler's turn; False if the socket cannot take it.

        Only for a session with nothing queued (see Session.poke), so nothing overtakes.
        """
        writer = self.writer
        if writer.paused or self.session.fatal is not None or not writer.write_text(frame):
            return False
        self.session.last_sent = time.monotonic()
        return True

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.writer.on_drained(None)
