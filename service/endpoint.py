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
from service.ws_protocol import EXTENSION

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger(__name__)

# What a send to a peer that is already gone raises, depending on who notices first.
GONE = (WebSocketDisconnect, RuntimeError, OSError)


async def stream_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    settings = runtime.settings.stream
    client = websocket.client
    peer = f"{client.host}:{client.port}" if client else "?"
    this_task = asyncio.current_task()
    assert this_task is not None
    reading = True
    stopped_reading = False  # the reader was cancelled by this connection's own end
    write_task: asyncio.Task[None] | None = None

    def stop_reading() -> None:
        nonlocal stopped_reading
        if reading and not stopped_reading:
            stopped_reading = True
            this_task.cancel()

    def on_fatal() -> None:
        # Stop taking events at once; a writer task may be parked in send() on a client
        # that reads nothing: cancel it rather than wait for it.
        if write_task is not None:
            write_task.cancel()
        else:
            stop_reading()

    extension = websocket.scope.get("extensions", {}).get(EXTENSION)
    pump = Pump(extension["writer"], runtime.writes) if extension else None
    wake_writer = asyncio.Event() if pump is None else None
    session = Session(
        runtime.hub,
        settings,
        wake=pump.want if pump is not None else wake_writer.set,  # type: ignore[union-attr]
        on_fatal=on_fatal,
        clock=time.time,
        peer=peer,
    )
    if pump is not None:
        pump.session = session
    await websocket.accept()
    runtime.connections.add(session)
    session.hello()

    async def writer() -> None:
        """The writer of a connection served without a direct writer (plain ASGI sends)."""
        send = websocket.send
        assert wake_writer is not None
        while session.fatal is None:
            frame, throttle_due = session.next_frame()
            if frame is None:
                wake_writer.clear()
                # No timer per wait: the runtime's heartbeat ticker wakes idle writers,
                # so only a held throttled event needs a deadline here.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(throttle_due):
                        await wake_writer.wait()
                continue
            await send({"type": "websocket.send", "text": frame})
            session.last_sent = time.monotonic()

    def on_writer_done(task: asyncio.Task[None]) -> None:
        stop_reading()

    if pump is None:
        write_task = asyncio.create_task(writer(), name=f"sp:write:{peer}")
        write_task.add_done_callback(on_writer_done)
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
        if not stopped_reading:
            raise  # cancelled from outside (server shutdown): not ours to swallow
        this_task.uncancel()
    except Exception:
        log.exception("Serving client %s failed; closing it with 1011", peer)
        session.fail("internal error")
    finally:
        reading = False
        if pump is not None:
            pump.stop()
        if write_task is not None:
            write_task.cancel()
            await asyncio.gather(write_task, return_exceptions=True)
            exc = None if write_task.cancelled() else write_task.exception()
            if isinstance(exc, GONE):
                peer_gone = True
            elif exc is not None:
                log.error("Serving client %s failed; closing it with 1011", peer, exc_info=exc)
                session.fail("internal error")
        session.detach()
        runtime.connections.discard(session)

    try:
        if not peer_gone:
            await _close(websocket, session, settings.close_timeout_s)
    finally:
        session.close()


async def _close(websocket: WebSocket, session: Session, timeout_s: float) -> None:
    """Flush what is still queued, send the explaining error frame, then the close frame.

    A peer that never reads cannot hold this up for longer than `timeout_s`.
    """
    fatal = session.fatal or Fatal(CloseCode.NORMAL, "", None)
    try:
        async with asyncio.timeout(timeout_s):
            while (frame := session.outbox.take_frame()) is not None:
                await websocket.send({"type": "websocket.send", "text": frame})
            if fatal.frame is not None:
                await websocket.send({"type": "websocket.send", "text": fatal.frame})
            await websocket.close(fatal.code, fatal.reason)
    except TimeoutError:
        log.warning("Client %s did not take its close frame within %.1f s", session.peer, timeout_s)
    except GONE:
        pass
