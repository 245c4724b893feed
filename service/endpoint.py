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
    fatal = asyncio.Event()
    session = Session(runtime.hub, settings, wake=wake.set, on_fatal=fatal.set, clock=time.time, peer=peer)
    await websocket.accept()
    runtime.connections.add(session)
    session.hello()

    async def reader() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                session.on_text(text)
            else:
                session.on_binary()

    async def writer() -> None:
        outbox = session.outbox
        send = websocket.send
        heartbeat_s = settings.heartbeat_ms / 1000
        last_sent = time.monotonic()
        while True:
            throttle_due = session.flush_throttled()
            frame = outbox.take_frame()
            if frame is None:
                wake.clear()
                idle = heartbeat_s - (time.monotonic() - last_sent)
                timeout = idle if throttle_due is None else min(idle, throttle_due)
                if timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await wake.wait()
                    continue
                if idle > 0:
                    continue  # a throttled event is due
                frame = protocol.heartbeat(runtime.hub.now_ms())
            await send({"type": "websocket.send", "text": frame})
            last_sent = time.monotonic()

    read_task = asyncio.create_task(reader(), name=f"sp:read:{peer}")
    write_task = asyncio.create_task(writer(), name=f"sp:write:{peer}")
    fatal_task = asyncio.create_task(fatal.wait(), name=f"sp:fatal:{peer}")
    tasks = (read_task, write_task, fatal_task)
    peer_gone = False
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if read_task in done:
            # The client closed, or uvicorn is shutting down and already sent 1012.
            peer_gone = read_task.exception() is None
        if write_task in done:
            peer_gone = peer_gone or isinstance(write_task.exception(), GONE)
        for io_task in (read_task, write_task):
            exc = io_task.exception() if io_task in done else None
            if exc is not None and not (io_task is write_task and isinstance(exc, GONE)):
                log.error("Serving client %s failed; closing it with 1011", peer, exc_info=exc)
                session.fail("internal error")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
