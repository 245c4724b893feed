"""The `/v1/stream` WebSocket route: a thin I/O shell around a Session.

Per connection: one reader (always awaiting `receive()`, so pings, close frames and
disconnects are noticed at once) and one writer (drains the outbox, one frame at a time,
and sends heartbeats when idle). Whichever ends first ends the connection; this function is
the single owner of `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect

from service import protocol
from service.protocol import CloseCode
from service.session import Fatal, Session

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
    wake = asyncio.Event()
    # A fatal condition wakes the writer, which ends; that ends the connection.
    write_task: asyncio.Task[None] | None = None

    def on_fatal() -> None:
        # The writer may be parked in send() on a client that reads nothing: cancel it
        # rather than wait for it, and stop taking events from the hub at once.
        wake.set()
        if write_task is not None:
            write_task.cancel()

    session = Session(runtime.hub, settings, wake=wake.set, on_fatal=on_fatal, clock=time.time, peer=peer)
    await websocket.accept()
    runtime.connections.add(session)
    session.hello()

    async def writer() -> None:
        outbox = session.outbox
        send = websocket.send
        while session.fatal is None:
            throttle_due = session.flush_throttled()
            frame = outbox.take_frame()
            if frame is None:
                if session.heartbeat_due:
                    frame = protocol.heartbeat(runtime.hub.now_ms())
                else:
                    wake.clear()
                    # No timer per wait: the runtime's heartbeat ticker wakes idle writers,
                    # so only a held throttled event needs a deadline here.
                    if throttle_due is None:
                        await wake.wait()
                    else:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(throttle_due):
                                await wake.wait()
                    continue
            session.heartbeat_due = False
            await send({"type": "websocket.send", "text": frame})
            session.last_sent = time.monotonic()

    # The reader runs in this task, the writer in its own: two tasks per connection. When
    # the writer ends (fatal condition, peer gone, bug) it cancels this task's receive().
    this_task = asyncio.current_task()
    assert this_task is not None
    reading = True
    writer_ended = False

    def on_writer_done(task: asyncio.Task[None]) -> None:
        nonlocal writer_ended
        if reading:
            writer_ended = True
            this_task.cancel()

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
        if not writer_ended:
            raise  # cancelled from outside (server shutdown): not ours to swallow
        this_task.uncancel()
    except Exception:
        log.exception("Serving client %s failed; closing it with 1011", peer)
        session.fail("internal error")
    finally:
        reading = False
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
