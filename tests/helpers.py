"""Test harness: a real uvicorn server on a port-0 socket, and clients that talk to it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from service.app import create_app
from service.cli import uvicorn_config
from service.config import Settings
from service.runtime import Runtime

TIMEOUT = 10.0


def make_settings(
    *,
    symbols: int = 4,
    interval_ms: int = 5,
    stream: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    feed: dict[str, Any] | None = None,
) -> Settings:
    names = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL", "JPM", "XOM"]
    names += [f"S{i:03d}" for i in range(max(0, symbols - len(names)))]
    return Settings.model_validate(
        {
            "server": {"ws_ping_interval_s": 0.5, "ws_ping_timeout_s": 2, "graceful_shutdown_s": 3, **(server or {})},
            "stream": {"heartbeat_ms": 300, "close_timeout_s": 2, **(stream or {})},
            "feeds": [
                {
                    "name": "test",
                    "kind": "random_walk",
                    "seed": 7,
                    "interval_ms": interval_ms,
                    "activity": 0.9,
                    "trade_ratio": 0.5,
                    **(feed or {}),
                    "symbols": [
                        {"symbol": sym, "price": 100 + 10 * i, "volatility": 0.4}
                        for i, sym in enumerate(names[:symbols])
                    ]
                    + [{"symbol": "PENNY", "price": 0.5123}],
                }
            ],
        }
    )


class Server:
    """A real uvicorn server running the app in this event loop, on an ephemeral port."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        ws: str | None = None,
        *,
        freeze_connections: bool = False,
    ) -> None:
        self.settings = settings
        self.app = create_app(settings, config_path, freeze_connections=freeze_connections)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/v1/stream"
        self.http = f"http://127.0.0.1:{self.port}"
        # ws: another uvicorn WebSocket implementation than stockpush's own (e.g. to test the
        # plain-ASGI writer that serves connections without a direct writer).
        overrides = {"ws": ws} if ws else {}
        self.uvicorn = uvicorn.Server(uvicorn_config(self.app, settings, log_level="warning", **overrides))
        self.task: asyncio.Task[None] | None = None

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def start(self) -> None:
        self.task = asyncio.create_task(self.uvicorn.serve(sockets=[self.sock]))
        async with asyncio.timeout(TIMEOUT):
            while not self.uvicorn.started:
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.uvicorn.should_exit = True
        if self.task is not None:
            async with asyncio.timeout(TIMEOUT):
                await self.task
        self.sock.close()


async def open_client(server: Server, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("ping_interval", None)
    # Unbounded: a test that stops reading must not stall its own close handshake.
    kwargs.setdefault("max_queue", None)
    return await connect(server.url, proxy=None, open_timeout=TIMEOUT, **kwargs)


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        raw = await ws.recv()
    message: dict[str, Any] = orjson.loads(raw)
    return message


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read until a message matches; return it and everything read before it."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await recv(ws, timeout)
            if predicate(message):
                return message, seen
            seen.append(message)


async def subscribed(server: Server, **subscribe: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """A client past hello and the ack of one subscribe request."""
    ws = await open_client(server)
    hello = await recv(ws)
    assert hello["type"] == "hello"
    await send(ws, {"op": "subscribe", "id": "s1", **subscribe})
    ack, _ = await until(ws, lambda m: m["type"] == "ack" and m.get("id") == "s1")
    return ws, ack


class SequenceChecker:
    """Applies the client rule of the protocol to every stream and records any violation."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], tuple[str, int]] = {}
        self.violations: list[str] = []
        self.events = 0

    def start(self, ch: str, sym: str, epoch: str, seq: int) -> None:
        self.last[(ch, sym)] = (epoch, seq)

    def feed(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "snapshot":
            self.start(message["ch"], message["sym"], message["epoch"], message["seq"])
        elif kind == "reset":
            self.last.pop((message["ch"], message["sym"]), None)
        elif kind == "data":
            for event in message["events"]:
                self.event(event)

    def event(self, event: dict[str, Any]) -> None:
        key = (event["ch"], event["sym"])
        self.events += 1
        if key not in self.last:
            self.violations.append(f"{key} event {event['seq']} before any snapshot or ack")
            return
        epoch, last = self.last[key]
        seq = event["seq"]
        if seq != last + 1 and event.get("prev_seq") != last:
            self.violations.append(f"{key} jumped from {last} to {seq} (prev_seq={event.get('prev_seq')})")
        self.last[key] = (epoch, seq)


class RawClient:
    """A WebSocket client over a raw socket with a tiny receive buffer that reads only when told.

    No library reader drains the kernel buffer, so the server really sees a client that has
    stopped reading.
    """

    def __init__(self, url: str, rcvbuf: int = 4096) -> None:
        self.url = url
        self.rcvbuf = rcvbuf
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.sock: socket.socket | None = None
        self._events: list[Any] = []

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        uri = parse_uri(self.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (uri.host, uri.port))
        self.sock = sock
        request = self.protocol.connect()
        self.protocol.send_request(request)
        await self._flush()
        while self.protocol.state is State.CONNECTING:
            await self._read_some()
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    async def _flush(self) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        for chunk in self.protocol.data_to_send():
            if chunk:
                await loop.sock_sendall(self.sock, chunk)

    async def _read_some(self) -> bool:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        data = await loop.sock_recv(self.sock, 65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._events.extend(self.protocol.events_received())
        await self._flush()
        return bool(data)

    async def send_json(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(orjson.dumps(message))
        await self._flush()

    async def send_close(self, code: int = 1000) -> None:
        """Start the closing handshake (and go on not reading, unless told)."""
        self.protocol.send_close(code)
        await self._flush()

    async def read_all(self, timeout: float = TIMEOUT) -> tuple[list[dict[str, Any]], Frame | None]:
        """Read until the server closes; return the JSON messages and the close frame."""
        messages: list[dict[str, Any]] = []
        close: Frame | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    alive = await self._read_some()
                    events, self._events = self._events, []
                    for event in events:
                        if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                            messages.append(orjson.loads(event.data))
                        elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                            close = event
                    if close is not None or not alive:
                        break
        return messages, close

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
