"""uvicorn's websockets-sansio protocol, plus a synchronous way to write data frames.

Through ASGI, a frame to one client passes Starlette's WebSocket, its exception wrapper,
uvicorn's `send()` coroutine, websockets' frame objects, and a task switch to the writer
that awaits it: ~14 us of Python per frame on top of the ~6 us the socket write itself
costs. With a thousand clients, frames, not events, are what fills the CPU. This protocol
hands the app a `DirectWriter` in the scope's extensions (see ASGI's "extensions"), with
which the app writes a ready text frame straight onto the transport from any callback,
and learns when the socket's buffer is full and when it drains.

It also bounds how long a closing connection may hold its socket. uvicorn's close awaits a
socket that can take data, and then closes the transport gracefully, which waits for the
buffer to drain: a peer that has stopped reading (the slow consumer closed 4100, the one
that stopped answering pings) never drains it, so its socket, kernel buffers (megabytes)
and file descriptor would stay until the peer itself goes away. Here the last frames go
into the transport's buffer at once, and a connection that is not gone within the linger
time is reset.

Everything else (handshake, reading, pings, shutdown) is uvicorn's own code. When
permessage-deflate is on, frames must go through websockets' compression, so the writer is
not offered and the app falls back to plain ASGI sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from service.lean_async import LeanEvent, LeanQueue

EXTENSION = "stockpush.direct_writer"
# SO_LINGER on, 0 s: close() discards the send buffer and sends RST, freeing the kernel's
# buffers at once. A plain close() keeps unsent data in an orphaned socket and retries it.
_LINGER_RESET = struct.pack("ii", 1, 0)


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame with `length` bytes of payload (RFC 6455 5.2).

    websockets builds the same bytes through a Frame object, BytesIO and struct per frame;
    a server's frames carry no mask and no extension bits, so three cases cover them all.
    """
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


class DirectWriter:
    """What the app may do with one connection's socket outside of ASGI sends."""

    __slots__ = ("_protocol", "paused")

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol
        # The socket's send buffer is past its high-water mark: write nothing until drained.
        # A plain attribute the protocol keeps (the pump reads it before every frame).
        self.paused = not protocol.writable.is_set()

    def write_text(self, text: str) -> bool:
        """Write one text frame now; False once the connection is closing or gone."""
        protocol = self._protocol
        transport = protocol.transport
        # Every way out of OPEN (our close frame, the peer's, a protocol error, a lost
        # connection) sets close_sent or closes the transport in uvicorn's protocol.
        if protocol.close_sent or transport.is_closing():
            return False
        data = text.encode()
        transport.writelines((text_frame_header(len(data)), data))
        return True

    def handshake_done(self) -> None:
        """Let go of the handshake's request and response: a connection lives long, they are ~3 KB."""
        protocol = self._protocol
        if protocol.handshake_complete:
            # websockets' parser, a generator that lives as long as the connection, still holds
            # the request in a local: empty its headers (~1.7 KB; the ASGI scope has its own copy).
            if protocol.request is not None:
                protocol.request.headers.clear()
            protocol.request = protocol.response = None  # type: ignore[assignment]

    def on_drained(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` when a paused socket can take frames again (None: stop)."""
        self._protocol.on_drained = callback

    def close(self, code: int, reason: str, last_frame: str | None, linger_s: float) -> None:
        """Write `last_frame` and a close frame now, full buffer or not; reset the socket after `linger_s`.

        A peer that reads again within `linger_s` gets everything queued, then the close; one
        that does not is reset rather than kept waiting on.
        """
        # A few hundred bytes at most: the buffer's high-water mark can wait for them.
        if last_frame is not None:
            self.write_text(last_frame)
        self._protocol.close_now(code, reason, linger_s)


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same interface as uvicorn's asyncio.Queue and Event, ~3.5 KB less per connection.
        self.queue = LeanQueue()  # type: ignore[assignment]
        self.writable = LeanEvent(value=True)  # type: ignore[assignment]
        self.on_drained: Callable[[], None] | None = None
        self.direct: DirectWriter | None = None
        self._linger: asyncio.TimerHandle | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # uvicorn built the scope only for a handshake it accepts; the app runs after this.
        scope = getattr(self, "scope", None)
        if scope is not None and not self.config.ws_per_message_deflate:
            self.direct = DirectWriter(self)
            scope["extensions"][EXTENSION] = {"writer": self.direct}

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.direct is not None:
            self.direct.paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.direct is not None:
            self.direct.paused = False
        if self.on_drained is not None:
            self.on_drained()

    def close_now(self, code: int, reason: str, linger_s: float) -> None:
        """Send a close frame now, writable or not, and reset the connection after `linger_s`."""
        if self.close_sent or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:  # the peer's closing frame must be read
            self.read_paused = False
            self.transport.resume_reading()
        # uvicorn's timer (closing the transport, cancelled when the peer echoes our close)
        # on our schedule, and a reset for when that close waits on a buffer that never drains.
        self.close_timer = self.loop.call_later(linger_s, self.transport.close)
        self._reset_after(linger_s)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()  # a close frame, then a graceful close: bound it too
        if not self.disconnected:
            self._reset_after(self.close_timeout)

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # However the app ended (the peer's close echoed, a shutdown's 1012, plain ASGI
        # sends that timed out), what is left is a close waiting on the peer: bound it.
        if not self.disconnected:
            self._reset_after(self.close_timeout)

    def _reset_after(self, linger_s: float) -> None:
        if self._linger is None:
            self._linger = self.loop.call_later(linger_s, self._reset)

    def _reset(self) -> None:
        self._linger = None
        if not self.disconnected:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.on_drained = None
        if self.direct is not None:
            self.direct.paused = False  # as uvicorn unblocks its senders: writes now fail, not wait
        super().connection_lost(exc)
