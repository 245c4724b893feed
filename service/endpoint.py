"""The `/v1/stream` WebSocket route: a thin I/O shell around a Session.

Per connection: one reader, this task, always awaiting `receive()` so that pings, close
frames and disconnects are noticed at once, and one writer that drains the outbox. Served
by `stockpush serve`, the writer is a Pump run from loop callbacks (service.pump, no task
per connection); under another server it is a task awaiting plain ASGI sends. A fatal
condition stops the reader; this function is the single owner of `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect

from service.protocol import CloseCode
from service.pump import Pump
from service.session import Fatal, Session
from service.ws_protocol import EXTENSION, DirectWriter

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger(__name__)

# What a send to a peer that is already gone raises, depending on who notices first.
GONE = (WebSocketDisconnect, RuntimeError, OSError)


async def stream_endpoint(websocket: WebSocket) -> None:
    await _Connection(websocket).serve()


class _Connection:
    """One client connection: its session, its writer, and the reader that is this task."""

    __slots__ = ("pump", "reading", "runtime", "session", "stopped_reading", "task", "wake_writer", "websocket",
                 "write_task")  # fmt: skip

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.runtime: Runtime = websocket.app.state.runtime
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.reading = True
        self.stopped_reading = False  # the reader was cancelled by this connection's own end
        self.write_task: asyncio.Task[None] | None = None
        client = websocket.client
        peer = f"{client.host}:{client.port}" if client else "?"
        extension = websocket.scope.get("extensions", {}).get(EXTENSION)
        self.pump = Pump(extension["writer"], self.runtime.writes) if extension else None
        self.wake_writer = asyncio.Event() if self.pump is None else None
        self.session = Session(
            self.runtime.hub,
            self.runtime.settings.stream,
            wake=self.pump.want if self.pump is not None else self.wake_writer.set,  # type: ignore[union-attr]
            on_fatal=self.on_fatal,
            clock=time.time,
            peer=peer,
            write_now=self.pump.write_now if self.pump is not None else None,
        )
        if self.pump is not None:
            self.pump.session = self.session

    def stop_reading(self, _: object = None) -> None:
        if self.reading and not self.stopped_reading:
            self.stopped_reading = True
            self.task.cancel()

    def on_fatal(self) -> None:
        # Stop taking events at once; a writer task may be parked in send() on a client
        # that reads nothing: cancel it rather than wait for it.
        if self.write_task is not None:
            self.write_task.cancel()
        else:
            self.stop_reading()

    async def writer(self) -> None:
        """The writer of a connection served without a direct writer (plain ASGI sends)."""
        session, wake = self.session, self.wake_writer
        send = self.websocket.send
        assert wake is not None
        while session.fatal is None:
            frame, throttle_due = session.next_frame()
            if frame is None:
                wake.clear()
                # No timer per wait: the runtime's heartbeat ticker wakes idle writers,
                # so only a held throttled event needs a deadline here.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(throttle_due):
                        await wake.wait()
                continue
            await send({"type": "websocket.send", "text": frame})
            session.last_sent = time.monotonic()

    async def serve(self) -> None:
        websocket, session, runtime = self.websocket, self.session, self.runtime
        try:
            await websocket.accept()
            if self.pump is not None:
                self.pump.writer.handshake_done()
            runtime.attach(session)
            session.hello()
            if self.pump is None:
                self.write_task = asyncio.create_task(self.writer(), name=f"sp:write:{session.peer}")
                self.write_task.add_done_callback(self.stop_reading)
        except BaseException:
            # Gone before it was served (the client left mid-handshake, or shutdown): it
            # gives back its wake group's place and is no connection of the runtime's.
            runtime.detach(session)
            session.close()
            raise
        peer_gone = False
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    # The client closed, or uvicorn is shutting down and already sent 1012.
                    peer_gone = True
                    break
                text = message.get("text")
                if text is not None:
                    session.on_text(text)
                else:
                    session.on_binary()
        except asyncio.CancelledError:
            if not self.stopped_reading:
                raise  # cancelled from outside (server shutdown): not ours to swallow
            self.task.uncancel()
        except Exception:
            log.exception("Serving client %s failed; closing it with 1011", session.peer)
            session.fail("internal error")
        finally:
            self.reading = False
            if self.pump is not None:
                self.pump.stop()
            if self.write_task is not None:
                peer_gone = await self._end_writer() or peer_gone
            session.detach()
            runtime.detach(session)

        try:
            if not peer_gone:
                writer = self.pump.writer if self.pump is not None else None
                await _close(websocket, session, runtime.settings.stream.close_timeout_s, writer)
        finally:
            session.close()

    async def _end_writer(self) -> bool:
        """Stop the writer task; True if it found the peer gone."""
        assert self.write_task is not None
        self.write_task.cancel()
        await asyncio.gather(self.write_task, return_exceptions=True)
        exc = None if self.write_task.cancelled() else self.write_task.exception()
        if isinstance(exc, GONE):
            return True
        if exc is not None:
            log.error("Serving client %s failed; closing it with 1011", self.session.peer, exc_info=exc)
            self.session.fail("internal error")
        return False


async def _close(websocket: WebSocket, session: Session, timeout_s: float, writer: DirectWriter | None) -> None:
    """Flush what is still queued, send the explaining error frame, then the close frame.

    A peer that never reads cannot hold this up, nor (with a direct writer) keep its socket,
    for longer than `timeout_s`.
    """
    fatal = session.fatal or Fatal(CloseCode.NORMAL, "", None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            while (frame := session.outbox.take_frame()) is not None:
                await websocket.send({"type": "websocket.send", "text": frame})
            if writer is None:
                if fatal.frame is not None:
                    await websocket.send({"type": "websocket.send", "text": fatal.frame})
                await websocket.close(fatal.code, fatal.reason)
    except TimeoutError:
        log.warning("Client %s did not take its last frames within %.1f s", session.peer, timeout_s)
    except GONE:
        return
    if writer is not None:
        writer.close(fatal.code, fatal.reason, fatal.frame, max(0.0, deadline - loop.time()))
