"""End to end G5: a client that stops reading never holds up others, and memory stays bounded.

The slow client is a raw socket with a 4 KiB receive buffer and no reader draining it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.frames import Close

from service.session import Session
from tests.conftest import StartServer
from tests.helpers import RawClient, SequenceChecker, Server, recv, subscribed


@pytest.fixture(params=["direct", "asgi"])
def writer(request: pytest.FixtureRequest) -> str:
    """Every test here runs with both writers (see tests/conftest.py)."""
    return str(request.param)


SEND_BUFFER = 64 * 1024


async def _fast_server(start_server: StartServer) -> Server:
    # Keepalive pings off: a stalled client also stops answering pings, and the ping timeout
    # would end it before the outbox policy under test does.
    return await start_server(
        symbols=20,
        interval_ms=1,
        stream={"send_buffer_bytes": SEND_BUFFER, "max_batch_bytes": 8192},
        server={"ws_ping_interval_s": 0},
    )


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    """Raw clients and background tasks to close even when a test fails half-way."""
    things: list[Any] = []
    yield things
    for thing in things:
        if isinstance(thing, RawClient):
            thing.close()
        else:
            thing.cancel()
            with contextlib.suppress(BaseException):
                await thing


async def _stalled_client(server: Server, cleanup: list[Any], **subscribe: Any) -> tuple[RawClient, Session]:
    """A raw client that subscribes, then never reads; and its session on the server."""
    known = set(server.runtime.connections)
    raw = RawClient(server.url, rcvbuf=4096)
    cleanup.append(raw)
    await raw.connect()
    await raw.send_json({"op": "subscribe", "id": "slow", **subscribe})
    async with asyncio.timeout(10):
        while not (session := next(iter(server.runtime.connections - known), None)):
            await asyncio.sleep(0.01)
    return raw, session


async def _healthy_client(
    server: Server, cleanup: list[Any]
) -> tuple[Any, SequenceChecker, asyncio.Event, asyncio.Task[None]]:
    """A client subscribed to everything, read continuously and checked by a SequenceChecker."""
    healthy, _ = await subscribed(server, symbols=["*"])
    checker = SequenceChecker()
    stop = asyncio.Event()
    reader = asyncio.create_task(_healthy_reader(healthy, checker, stop))
    cleanup.append(reader)
    return healthy, checker, stop, reader


async def _healthy_reader(ws: Any, checker: SequenceChecker, stop: asyncio.Event) -> None:
    while not stop.is_set():
        checker.feed(await recv(ws))


async def test_state_channels_conflate_for_a_stalled_client(start_server: StartServer, cleanup: list[Any]) -> None:
    """Past half the outbox: notice SLOW_CONSUMER, quotes conflated with prev_seq, outbox bounded, others unaffected."""
    server = await _fast_server(start_server)
    healthy, checker, stop, reader = await _healthy_client(server, cleanup)
    raw, session = await _stalled_client(server, cleanup, channels=["quotes"], symbols=["*"])
    async with asyncio.timeout(20):
        while session.outbox.conflated < 2000:
            assert session.outbox.bytes <= SEND_BUFFER
            await asyncio.sleep(0.01)
    assert session.fatal is None  # conflation alone keeps it within bounds: no close
    assert session.outbox.bytes <= SEND_BUFFER
    events_while_stalled = checker.events
    assert events_while_stalled > 1000  # the healthy client kept receiving all along

    messages, close = await raw.read_all(timeout=1.0)
    assert close is None
    notices = [m for m in messages if m["type"] == "notice"]
    assert notices and notices[0]["code"] == "SLOW_CONSUMER"
    slow = SequenceChecker()
    for message in messages:
        slow.feed(message)
    assert slow.violations == []
    assert any("prev_seq" in e for m in messages if m["type"] == "data" for e in m["events"])
    stop.set()
    await reader
    assert checker.violations == []
    raw.close()
    await healthy.close()


async def test_stalled_trades_client_is_closed_4100_and_resumes_losslessly(
    start_server: StartServer, cleanup: list[Any]
) -> None:
    """Trades never conflate: a full outbox → error SLOW_CONSUMER, close 4100; the resume is gap-free."""
    server = await _fast_server(start_server)
    healthy, checker, stop, reader = await _healthy_client(server, cleanup)
    raw, session = await _stalled_client(server, cleanup, symbols=["*"])
    async with asyncio.timeout(20):
        while session.fatal is None:
            assert session.outbox.bytes <= SEND_BUFFER
            await asyncio.sleep(0.005)
    assert checker.events > 1000

    messages, close = await raw.read_all()
    raw.close()
    assert close is not None
    assert Close.parse(close.data).code == 4100
    errors = [m for m in messages if m["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("SLOW_CONSUMER", True)]
    assert messages[-1] == errors[0]
    seen = SequenceChecker()
    for message in messages:
        seen.feed(message)
    assert seen.violations == []
    assert session not in server.runtime.connections

    # Reconnect and resume every stream from the last seq we got: no gap, no duplicate.
    positions = dict(seen.last)
    ws, ack = await subscribed(
        server,
        streams=[{"ch": ch, "sym": sym, "epoch": ep, "after_seq": seq} for (ch, sym), (ep, seq) in positions.items()],
    )
    assert all(entry["recovered"] for entry in ack["ok"]), ack["ok"]
    resumed = SequenceChecker()
    resumed.last = positions
    target = sum(entry["replayed"] for entry in ack["ok"]) + 500
    while resumed.events < target:
        resumed.feed(await recv(ws))
    assert resumed.violations == []
    stop.set()
    await reader
    assert checker.violations == []
    await ws.close()
    await healthy.close()


async def test_stalled_client_is_released_without_ever_reading(start_server: StartServer, cleanup: list[Any]) -> None:
    """After 4100 a client that never reads is detached at once and gone within close_timeout_s."""
    server = await _fast_server(start_server)
    _, session = await _stalled_client(server, cleanup, symbols=["*"])
    async with asyncio.timeout(20):
        while session.fatal is None:
            await asyncio.sleep(0.005)
    assert session.fatal.code == 4100
    close_timeout = server.settings.stream.close_timeout_s
    async with asyncio.timeout(close_timeout + 3):
        while session in server.runtime.connections:
            await asyncio.sleep(0.02)
    assert all(session not in stream.subscribers for stream in server.runtime.hub.streams.values())
    assert not any(t.get_name().startswith("sp:write:") for t in asyncio.all_tasks())


# The bound on a close is the direct writer's (stockpush's own WebSocket protocol).
@pytest.mark.parametrize("writer", ["direct"])
async def test_stalled_client_socket_is_aborted_after_close_timeout(
    start_server: StartServer, cleanup: list[Any]
) -> None:
    """A 4100'd client that never reads holds no socket past close_timeout_s.

    Closing gracefully waits for the socket's buffer to drain, which a peer that never reads
    never lets happen: its buffers and file descriptor would stay until the peer goes away.
    """
    server = await _fast_server(start_server)
    raw, session = await _stalled_client(server, cleanup, symbols=["*"])
    protocol = _protocol_of(server, raw)
    async with asyncio.timeout(20):
        while session.fatal is None:
            await asyncio.sleep(0.005)
    assert session.fatal.code == 4100
    started = asyncio.get_running_loop().time()
    await _reset(server, raw, protocol)
    close_timeout = server.settings.stream.close_timeout_s
    assert asyncio.get_running_loop().time() - started >= close_timeout - 0.5  # it had its time to read


def _protocol_of(server: Server, raw: RawClient) -> Any:
    """uvicorn's protocol object serving `raw`'s connection."""
    assert raw.sock is not None
    port = raw.sock.getsockname()[1]
    (protocol,) = [p for p in server.uvicorn.server_state.connections if p.client and p.client[1] == port]
    return protocol


async def _client_with_a_full_buffer(
    start_server: StartServer, cleanup: list[Any], **server: Any
) -> tuple[Server, RawClient, Session, Any]:
    """A stalled client whose socket buffer is full, and an outbox too large to fill meanwhile.

    Only a buffer the peer does not drain keeps a graceful close waiting. Its protocol's
    closing timeout (uvicorn's 10 s, the linger of such a close) is cut to 1 s.
    """
    srv = await start_server(
        symbols=20,
        interval_ms=1,
        stream={"send_buffer_bytes": 256 * 1024 * 1024, "max_batch_bytes": 8192},
        server=server,
    )
    raw, session = await _stalled_client(srv, cleanup, symbols=["*"])
    protocol = _protocol_of(srv, raw)
    protocol.close_timeout = 1.0
    async with asyncio.timeout(10):
        while protocol.writable.is_set():
            await asyncio.sleep(0.01)
    return srv, raw, session, protocol


async def _reset(server: Server, raw: RawClient, protocol: Any) -> None:
    """The server lets go of the connection, and with a reset: a close would orphan the socket."""
    async with asyncio.timeout(15):
        while protocol in server.uvicorn.server_state.connections:
            await asyncio.sleep(0.02)
    with pytest.raises(ConnectionResetError):
        await raw.read_all(timeout=5.0)


# The bound on a close is the direct writer's (stockpush's own WebSocket protocol).
@pytest.mark.parametrize("writer", ["direct"])
async def test_client_dropped_by_keepalive_is_reset_when_it_does_not_read(
    start_server: StartServer, cleanup: list[Any]
) -> None:
    """A client that stops reading and so answers no ping is closed by the keepalive, and reset after a linger."""
    server, raw, session, protocol = await _client_with_a_full_buffer(
        start_server, cleanup, ws_ping_interval_s=3, ws_ping_timeout_s=1
    )
    assert not protocol.close_sent, "the keepalive closed the connection before its buffer filled"
    await _reset(server, raw, protocol)
    assert session.fatal is None or session.fatal.code != 4100  # the keepalive ended it, not the outbox


@pytest.mark.parametrize("writer", ["direct"])
async def test_client_that_closes_but_does_not_read_is_reset(start_server: StartServer, cleanup: list[Any]) -> None:
    """The peer starts the closing handshake with a full buffer, then reads nothing: reset, not kept."""
    server, raw, session, protocol = await _client_with_a_full_buffer(start_server, cleanup, ws_ping_interval_s=0)
    await raw.send_close()
    await _reset(server, raw, protocol)
    assert session not in server.runtime.connections
