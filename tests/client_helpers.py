"""Test harness for the client: a TCP proxy that can cut connections, a scripted fake server,
and a ledger that checks what a consumer saw against the protocol's exactly-once rule."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve

from service.client import (
    Backoff,
    BarEvent,
    QuoteEvent,
    ResetMessage,
    SnapshotMessage,
    StatusEvent,
    StreamEvent,
    TradeEvent,
)
from tests.helpers import TIMEOUT

# Reconnect fast in tests; the bands and retry_after_ms still apply.
FAST = Backoff(initial_s=0.02, max_s=0.2, immediate_s=0.01)


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll a condition the code under test exposes no event for; fail after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


class CutProxy:
    """A TCP proxy in front of a server: cut every connection at will, refuse new ones, follow
    a new target port, or cut right after a pattern went by (e.g. during a replay)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepted = 0  # client connections accepted so far
        self.refuse = False  # close new connections at once
        self.cuts = 0
        self.seen = 0  # times the `watch` pattern went by, server to client
        self._watch: re.Pattern[bytes] | None = None
        self._trigger: _Trigger | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> int:
        """Reset every open connection (like a network failure); returns how many."""
        writers, self._writers = self._writers, set()
        for writer in writers:
            writer.transport.abort()
        self.cuts += 1
        return len(writers) // 2

    def count(self, pattern: bytes) -> None:
        """Count occurrences of `pattern` (a regex) going from server to client in `seen`."""
        self._watch = re.compile(pattern)

    def cut_after(self, pattern: bytes, extra_bytes: int) -> asyncio.Event:
        """Arm a cut: once `pattern` went by from server to client, let `extra_bytes` more through, then cut."""
        self._trigger = _Trigger(pattern, extra_bytes)
        return self._trigger.fired

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for task in (self._pump(reader, up_writer, False), self._pump(up_reader, writer, True)):
            t = asyncio.create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: bool) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                trigger = self._trigger if downstream else None
                if downstream:
                    window = tail + chunk
                    if self._watch is not None:
                        self.seen += len(self._watch.findall(window)) - len(self._watch.findall(tail))
                    tail = window[-256:]
                if trigger is not None:
                    if trigger.remaining is None:
                        match = trigger.pattern.search(window)
                        if match is not None:
                            trigger.remaining = trigger.extra - (len(window) - match.end())
                    else:
                        trigger.remaining -= len(chunk)
                    if trigger.remaining is not None and trigger.remaining < 0:
                        writer.write(chunk[: len(chunk) + trigger.remaining])
                        await writer.drain()
                        self._trigger = None
                        self.cut()
                        trigger.fired.set()
                        return
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()


class _Trigger:
    def __init__(self, pattern: bytes, extra: int) -> None:
        self.pattern = re.compile(pattern)
        self.extra = extra
        self.remaining: int | None = None  # bytes still to let through once the pattern went by
        self.fired = asyncio.Event()


Handler = Callable[[ServerConnection], Awaitable[None]]


class FakeServer:
    """A scripted WebSocket server: each connection runs the next handler (the last one repeats)."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.connections = 0
        self.received: list[dict[str, Any]] = []
        self.opened: list[float] = []  # loop time of each connection
        self._server: WsServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/stream"

    async def start(self) -> FakeServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None, compression=None)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.opened.append(asyncio.get_running_loop().time())
        handler = self.handlers[min(self.connections, len(self.handlers) - 1)]
        self.connections += 1
        await handler(ws)

    async def recv(self, ws: ServerConnection) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            message: dict[str, Any] = orjson.loads(await ws.recv())
        self.received.append(message)
        return message


def hello(heartbeat_ms: int = 5000, symbols: tuple[str, ...] = ("AAPL",)) -> str:
    return frame(
        {
            "type": "hello",
            "protocol": "stockpush/1",
            "server_ts": 1,
            "heartbeat_ms": heartbeat_ms,
            "limits": {
                "max_subscriptions": 1000,
                "max_frame_bytes": 65536,
                "max_batch_bytes": 65536,
                "send_buffer_bytes": 1048576,
                "replay_window": 10000,
                "inbound_rate": {"per_s": 20.0, "burst": 40},
            },
            "channels": {"trades": "event", "quotes": "state"},
            "symbols": list(symbols),
        }
    )


def frame(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def ack(request: dict[str, Any], ok: list[dict[str, Any]]) -> str:
    return frame(
        {"type": "ack", "id": request.get("id"), "op": "subscribe", "server_ts": 1, "ok": ok, "failed": [],
         "subscriptions": {}, "count": len(ok), "limit": 1000}
    )  # fmt: skip


def trades(*seqs: int, sym: str = "AAPL") -> str:
    events = [{"ch": "trades", "sym": sym, "seq": s, "ts": 1000 + s, "price": 100.0 + s, "size": 100} for s in seqs]
    return frame({"type": "data", "events": events})


def snapshot(ch: str, seq: int, epoch: str = "E1", sym: str = "AAPL") -> str:
    data = {"open": 100.0, "high": 101.0, "low": 99.0, "last": 100.5, "prev_close": 99.5, "volume": 1000,
            "price_decimals": 2, "status": "open"}  # fmt: skip
    return frame({"type": "snapshot", "ch": ch, "sym": sym, "epoch": epoch, "seq": seq, "ts": 1000, "data": data})


class Ledger:
    """What a consumer saw, checked event by event against the client rule of the protocol."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self.last: dict[tuple[str, str], tuple[str, int]] = {}
        self.trades: dict[tuple[str, str, str], list[TradeEvent]] = {}  # (sym, epoch) -> trades in order
        self.violations: list[str] = []
        self.resets: list[ResetMessage] = []
        self.snapshots: list[SnapshotMessage] = []
        self.data = 0

    def add(self, event: StreamEvent) -> None:
        self.events.append(event)
        key = (event.ch, event.sym)
        if isinstance(event, SnapshotMessage):
            self.snapshots.append(event)
            if key in self.last and self.last[key][0] == event.epoch and event.seq < self.last[key][1]:
                self.violations.append(f"{key} snapshot went back from {self.last[key][1]} to {event.seq}")
            self.last[key] = (event.epoch, event.seq)
            return
        if isinstance(event, ResetMessage):
            self.resets.append(event)
            self.last.pop(key, None)
            return
        assert isinstance(event, TradeEvent | QuoteEvent | StatusEvent | BarEvent)
        self.data += 1
        if key not in self.last:
            self.violations.append(f"{key} event {event.seq} before its snapshot")
            return
        epoch, last = self.last[key]
        prev = getattr(event, "prev_seq", None)
        if event.seq != last + 1 and prev != last:
            self.violations.append(f"{key} went from {last} to {event.seq} (prev_seq {prev})")
        self.last[key] = (epoch, event.seq)
        if isinstance(event, TradeEvent):
            self.trades.setdefault((event.ch, event.sym, epoch), []).append(event)
