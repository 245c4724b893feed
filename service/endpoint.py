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
from service.session import Session

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
            frame = outbox.take_frame()
            if frame is None:
                wake.clear()
                idle = heartbeat_s - (time.monotonic() - last_sent)
                if idle > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(idle):
                            await wake.wait()
                    continue
                frame = protocol.heartbeat(runtime.hub.now_ms())
            await send({"type": "websocket.send", "text": frame})
            last_sent = time.monotonic()

    tasks = {
        asyncio.create_task(reader(), name=f"sp:read:{peer}"),
        asyncio.create_task(writer(), name=f"sp:write:{peer}"),
        asyncio.create_task(fatal.wait(), name=f"sp:fatal:{peer}"),
    }
    close_code: CloseCode | None = CloseCode.NORMAL
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is None:
                continue
            if isinstance(exc, GONE):
                close_code = None
            else:
                log.error("Client %s failed; closing it with 1011", peer, exc_info=exc)
                session.fail("internal error")
        if any(t.exception() is None for t in done if t.get_name().startswith("sp:read")):
            close_code = None  # the client (or server shutdown) already closed the socket
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session.close()
        runtime.connections.discard(session)

    if session.fatal is not None:
        await _close(websocket, session.fatal.code, session.fatal.reason, session.fatal.frame, settings.close_timeout_s)
    elif close_code is not None:
        await _close(websocket, close_code, "", None, settings.close_timeout_s)


async def _close(websocket: WebSocket, code: int, reason: str, frame: str | None, timeout_s: float) -> None:
    """Send the explaining error frame, then the close frame; give up on a peer that never reads."""
    try:
        async with asyncio.timeout(timeout_s):
            if frame is not None:
                await websocket.send({"type": "websocket.send", "text": frame})
            await websocket.close(code, reason)
    except TimeoutError:
        log.warning("Client %s did not take its close frame within %.1f s", websocket.client, timeout_s)
    except GONE:
        pass
