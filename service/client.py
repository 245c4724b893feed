"""A Python client for `/v1/stream` that recovers by itself, with no gap and no duplicate.

    async with connect("ws://127.0.0.1:8000/v1/stream") as stream:
        await stream.subscribe(["AAPL", "MSFT"], channels=["trades", "quotes"])
        async for event in stream:
            ...

Events are the protocol's own models (`service.protocol`): `TradeEvent`, `QuoteEvent`,
`StatusEvent`, `BarEvent` as they come, `SnapshotMessage` first for every stream, and
`ResetMessage` when a stream restarted (always followed by a fresh snapshot of it).

Behind the iterator the client applies the protocol's client rule to every stream: it drops
duplicates, resumes a stream in-band when it sees a jump that is not legal, reconnects with
jittered exponential backoff that follows the close-code bands, resumes every stream from its
last `seq` and, when the server cannot replay (new epoch, outside the replay window), hands
over a `ResetMessage` and a fresh snapshot instead. `Tracker` is that rule as pure code;
`Stream` is the I/O around it.

Exceptions::

    ClientError                 anything this client raises on purpose
    ├── ConnectError            the server could not be reached (first connection, or max_attempts)
    ├── FatalCloseError         the server closed with 4000-4099: fix something before retrying
    ├── SubscribeError          the server refused a request or some of its streams
    └── ServerProtocolError     the server sent something this protocol version does not allow
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args

import orjson
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from service.protocol import (
    PROTOCOL,
    AckMessage,
    BarEvent,
    DataMessage,
    ErrorMessage,
    HelloMessage,
    NoticeMessage,
    QuoteEvent,
    ResetMessage,
    SnapshotMessage,
    StatusEvent,
    TradeEvent,
    parse_server_message,
)

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_URL",
    "Backoff",
    "BarEvent",
    "BlockingStream",
    "ClientError",
    "ConnectError",
    "FatalCloseError",
    "QuoteEvent",
    "ResetMessage",
    "ServerProtocolError",
    "SnapshotMessage",
    "Stats",
    "StatusEvent",
    "Stream",
    "StreamEvent",
    "SubscribeError",
    "Tracker",
    "TradeEvent",
    "connect",
    "connect_sync",
]

log = logging.getLogger(__name__)

StreamEvent = TradeEvent | QuoteEvent | StatusEvent | BarEvent | SnapshotMessage | ResetMessage
MarketEvent = TradeEvent | QuoteEvent | StatusEvent | BarEvent
StreamKey = tuple[str, str]  # (channel, symbol)
_T = TypeVar("_T")

DEFAULT_URL = "ws://127.0.0.1:8000/v1/stream"  # `stockpush serve` with the default config
FATAL_CLOSE = range(4000, 4100)  # fix something first: never retried
RESUME_NOW_CLOSE = range(4100, 4200)  # reconnect at once and resume
BACKOFF_CLOSE = (*range(4200, 4300), 1012, 1013)  # back off, honouring retry_after_ms
STREAMS_PER_REQUEST = 200  # keeps a request far below the server's 64 KiB frame limit
# A generous guess of one event's wire size, to keep a resume request's worst-case replay
# (replay_window events per stream) within the server's limits.max_replay_bytes.
EVENT_BYTES_ESTIMATE = 160
MAX_FRAME_BYTES = 16 * 1024 * 1024  # what we accept from the server
DEFAULT_BUFFER = 1000  # events waiting for the consumer; past it the client stops reading (see Stream)
WATCHDOG_GRACE_S = 0.25  # one more short wait before a silent connection is declared dead


# --- errors --------------------------------------------------------------------------------


class ClientError(Exception):
    """Anything this client raises on purpose."""


class ConnectError(ClientError):
    """The server could not be reached, or gave no hello."""


class FatalCloseError(ClientError):
    """The server closed with a fatal code (4000-4099); retrying cannot help."""

    def __init__(self, code: int, reason: str, error: ErrorMessage | None) -> None:
        self.code = code
        self.reason = reason
        self.error = error
        detail = f"{error.code}: {error.message}" if error is not None else reason or "no reason given"
        super().__init__(f"the server closed the connection with fatal code {code} ({detail})")


class SubscribeError(ClientError):
    """The server refused a request (`error`), or some of its streams (`ack.failed`)."""

    def __init__(self, message: str, *, ack: AckMessage | None = None, error: ErrorMessage | None = None) -> None:
        super().__init__(message)
        self.ack = ack
        self.error = error


class ServerProtocolError(ClientError):
    """The server sent a frame this protocol version does not allow."""


# --- settings and counters -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """When to reconnect. Delays are `min(max_s, initial_s * 2**attempt) * random(0.5..1)`.

    `attempt` counts reconnections since a connection last delivered a snapshot or data.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    # 4100-4199 ("reconnect now"): the first attempt waits only random(0..immediate_s).
    immediate_s: float = 0.25
    # Consecutive failed attempts before giving up with ConnectError; None: never give up.
    max_attempts: int | None = None

    def delay(self, attempt: int, rnd: float) -> float:
        return min(self.max_s, self.initial_s * 2.0**attempt) * (0.5 + rnd / 2)


DEFAULT_BACKOFF = Backoff()


@dataclasses.dataclass(slots=True)
class Stats:
    """What happened so far, for logs and dashboards."""

    connects: int = 0  # connections that got as far as hello
    reconnects: int = 0  # of which after the first
    events: int = 0  # data events accepted in order, for the consumer (snapshots and resets not counted)
    replayed: int = 0  # of which came from a replay after a resume
    resets: int = 0  # streams that restarted (reset frames and refused resumes)
    duplicates: int = 0  # events dropped because they were already handed over
    gaps: int = 0  # jumps that were not legal; each was resumed in-band
    stalls: int = 0  # times reading stopped because the consumer's buffer was full
    deferred: int = 0  # events left with the server while the buffer was full; fetched again by resume
    latency_ms: float | None = None  # event `ts` to receipt, of the last live event
    latency_avg_ms: float | None = None  # the same, exponentially averaged (weight 1/20)


# --- the client rule, pure -----------------------------------------------------------------


@dataclasses.dataclass(eq=False, slots=True)
class Position:
    """Where one subscribed stream stands. A new object per subscription (identity matters)."""

    ch: str
    sym: str
    epoch: str
    seq: int
    throttle_ms: int
    synced: bool = False  # False until a snapshot (or a resumed position) is the base
    resyncing: bool = False  # an in-band resume is on its way: events wait for its ack
    behind: bool = False  # the buffer was full: events are left with the server until resumed
    replaying: int = 0  # replayed events still to come after a resume ack


Delivery = tuple[StreamEvent, Position]


class Tracker:
    """The protocol's client rule for every stream: server messages in, events to hand over out.

    No I/O. `resync` collects the streams the caller must resume in-band (illegal jumps).
    """

    def __init__(self, stats: Stats, clock: Callable[[], float] = time.time) -> None:
        self.stats = stats
        self.clock = clock
        self.positions: dict[StreamKey, Position] = {}
        self.resync: list[Position] = []
        self._behind: dict[StreamKey, Position] = {}

    @property
    def behind(self) -> bool:
        """Some streams wait to be resumed because the consumer's buffer was full."""
        return bool(self._behind)

    def take_behind(self) -> list[Position]:
        """The streams to resume now that the buffer has room; they wait for the resume's ack."""
        out = [p for key, p in self._behind.items() if self.positions.get(key) is p and p.behind]
        self._behind.clear()
        for pos in out:
            pos.behind, pos.resyncing = False, True
        return out

    def on_ack(self, ack: AckMessage, *, resume: bool, throttle_ms: int = 0) -> list[Delivery]:
        """Start tracking what a subscribe acknowledged; for a resume, what it recovered or not."""
        out: list[Delivery] = []
        for entry in ack.ok or ():
            key = (entry.ch, entry.sym)
            pos = self.positions.get(key)
            if entry.epoch is None or entry.seq is None:
                continue  # an unsubscribe ack
            if not resume:
                if pos is None:  # new: its snapshot follows
                    self.positions[key] = Position(entry.ch, entry.sym, entry.epoch, entry.seq, throttle_ms)
                continue
            if pos is None:
                continue  # unsubscribed meanwhile
            pos.resyncing = False
            if entry.recovered:
                pos.replaying = entry.replayed or 0
            else:
                # The server cannot replay: a fresh snapshot follows this ack.
                pos.synced, pos.epoch, pos.replaying = False, entry.epoch, 0
                self.stats.resets += 1
                reason = entry.reason or "NOT_RECOVERED"
                out.append(
                    (ResetMessage(type="reset", ch=entry.ch, sym=entry.sym, epoch=entry.epoch, reason=reason), pos)
                )
        if resume:
            for failed in ack.failed or ():
                pos = self.positions.pop((failed.ch, failed.sym), None)
                if pos is not None:
                    log.warning("Stream %s/%s is gone from the server (%s); it is no longer followed",
                                failed.ch, failed.sym, failed.code)  # fmt: skip
        return out

    def on_snapshot(self, snapshot: SnapshotMessage) -> list[Delivery]:
        pos = self.positions.get((snapshot.ch, snapshot.sym))
        if pos is None:
            return []
        if pos.synced and snapshot.epoch == pos.epoch and snapshot.seq < pos.seq:
            return []  # older than what was handed over already
        pos.epoch, pos.seq = snapshot.epoch, snapshot.seq
        pos.synced, pos.resyncing, pos.behind, pos.replaying = True, False, False, 0
        return [(snapshot, pos)]

    def on_reset(self, reset: ResetMessage) -> list[Delivery]:
        pos = self.positions.get((reset.ch, reset.sym))
        if pos is None:
            return []
        pos.epoch, pos.synced, pos.resyncing, pos.behind, pos.replaying = reset.epoch, False, False, False, 0
        self.stats.resets += 1
        return [(reset, pos)]

    def on_data(self, data: DataMessage, room: int | None = None) -> list[Delivery]:
        """The events to hand over, at most `room`; streams past it fall behind (see take_behind)."""
        out: list[Delivery] = []
        stats = self.stats
        now_ms = self.clock() * 1000
        for event in data.events:
            pos = self.positions.get((event.ch, event.sym))
            if pos is None or not pos.synced or pos.resyncing:
                continue
            seq = event.seq
            if seq <= pos.seq:
                stats.duplicates += 1
                continue
            if pos.behind or (room is not None and len(out) >= room):
                if not pos.behind:
                    pos.behind = True
                    self._behind[(pos.ch, pos.sym)] = pos
                stats.deferred += 1
                continue
            if seq != pos.seq + 1 and getattr(event, "prev_seq", None) != pos.seq:
                log.warning("Stream %s/%s jumped from seq %d to %d: resuming it", event.ch, event.sym, pos.seq, seq)
                stats.gaps += 1
                pos.resyncing = True
                self.resync.append(pos)
                continue
            pos.seq = seq
            stats.events += 1
            if pos.replaying:
                pos.replaying -= 1
                stats.replayed += 1
            else:
                latency = now_ms - event.ts
                stats.latency_ms = latency
                avg = stats.latency_avg_ms
                stats.latency_avg_ms = latency if avg is None else avg + (latency - avg) / 20
            out.append((event, pos))
        return out

    def forget(self, keys: Iterable[StreamKey]) -> None:
        for key in keys:
            self.positions.pop(key, None)

    def reconnected(self) -> tuple[list[Position], list[Position]]:
        """After a reconnect: (streams to resume from their position, streams to subscribe afresh)."""
        self.resync.clear()
        self._behind.clear()
        resume: list[Position] = []
        fresh: list[Position] = []
        for pos in self.positions.values():
            pos.resyncing, pos.behind, pos.replaying = False, False, 0
            (resume if pos.synced else fresh).append(pos)
        return resume, fresh


def resume_requests(
    positions: Sequence[Position], per_request: int = STREAMS_PER_REQUEST
) -> list[tuple[dict[str, Any], int]]:
    """`subscribe` bodies (without id) that resume these streams, with their throttle_ms."""
    out: list[tuple[dict[str, Any], int]] = []
    for throttle_ms, group in _by_throttle(positions):
        for chunk in _chunks(group, per_request):
            streams = [{"ch": p.ch, "sym": p.sym, "epoch": p.epoch, "after_seq": p.seq} for p in chunk]
            out.append(({"op": "subscribe", "streams": streams, "throttle_ms": throttle_ms}, throttle_ms))
    return out


def fresh_requests(positions: Sequence[Position]) -> list[tuple[dict[str, Any], int]]:
    """`subscribe` bodies (without id) that subscribe these streams again, snapshot first."""
    out: list[tuple[dict[str, Any], int]] = []
    for throttle_ms, group in _by_throttle(positions):
        by_channel: dict[str, list[str]] = {}
        for p in group:
            by_channel.setdefault(p.ch, []).append(p.sym)
        for ch, symbols in by_channel.items():
            for chunk in _chunks(symbols, STREAMS_PER_REQUEST):
                body = {"op": "subscribe", "channels": [ch], "symbols": list(chunk), "throttle_ms": throttle_ms}
                out.append((body, throttle_ms))
    return out


def _by_throttle(positions: Sequence[Position]) -> list[tuple[int, list[Position]]]:
    groups: dict[int, list[Position]] = {}
    for pos in positions:
        groups.setdefault(pos.throttle_ms, []).append(pos)
    return list(groups.items())


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def streams_per_resume(hello: HelloMessage) -> int:
    """How many streams one resume request may name so that even full replays fit its budget."""
    limits = hello.limits
    if limits.max_replay_bytes is None:
        return STREAMS_PER_REQUEST
    worst = limits.replay_window * EVENT_BYTES_ESTIMATE
    return max(1, min(STREAMS_PER_REQUEST, limits.max_replay_bytes // worst))


class Pacer:
    """Spaces requests to stay within the server's inbound rate (hello.limits.inbound_rate), with a margin."""

    def __init__(self, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s * 0.8
        self.capacity = max(1.0, burst - 2.0)
        self.tokens = self.capacity
        self.clock = clock
        self.last = clock()

    def delay(self) -> float:
        """Take one request's token; how long to wait before sending it."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.per_s) - 1
        self.last = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.per_s


# --- the I/O shell -------------------------------------------------------------------------


@dataclasses.dataclass(eq=False, slots=True)
class _Request:
    id: str
    body: dict[str, Any]
    kind: Literal["subscribe", "resume", "unsubscribe"]
    throttle_ms: int = 0
    future: asyncio.Future[AckMessage] | None = None  # None: one of the client's own requests
    sent_on: int = 0  # the connection it was last sent on (0: not sent yet)


@dataclasses.dataclass(frozen=True, slots=True)
class _Closed:
    code: int | None  # None: no close frame (dropped, or declared dead by the watchdog)
    reason: str
    error: ErrorMessage | None  # the fatal `error` frame just before the close, if any
    served: bool  # it delivered a snapshot or data: the backoff starts over


class Stream:
    """One logical subscription session that survives disconnects. Made by `connect()`.

    Events wait for the consumer in a buffer of `buffer` events. When it is full the client
    stops reading, so a consumer that stalls for long meets the server's slow-consumer policy
    (conflation, then close 4100), from which it resumes without loss. One exception keeps a
    `subscribe()` from waiting forever for an ack stuck behind data nobody reads: while a
    request waits for its answer, reading goes on, and the events that do not fit are left
    with the server, to be fetched again by resume once the consumer has caught up to half
    the buffer (`stats.deferred`, then `stats.replayed`).
    """

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        open_timeout: float | None = 10.0,
        request_timeout: float | None = 10.0,
        missed_heartbeats: float | None = 3.0,
        buffer: int = DEFAULT_BUFFER,
        proxy: str | Literal[True] | None = True,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1 event, got {buffer}")
        self.url = url
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.request_timeout = request_timeout
        self.missed_heartbeats = missed_heartbeats
        self.buffer = buffer
        self.stats = Stats()
        self.hello: HelloMessage | None = None  # from the current (or last) connection
        self._proxy = proxy
        self._rng = rng
        self._tracker = Tracker(self.stats, clock)
        self._items: collections.deque[Delivery] = collections.deque()
        self._readable = asyncio.Event()  # set when an item or the end is there for __anext__
        self._room = asyncio.Event()  # set when the buffer has room, or a request waits for an answer
        self._requests: dict[str, _Request] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._serial = 0  # connections opened so far
        self._ready = False  # the current connection has been sent its resume requests
        self._last_error: ErrorMessage | None = None
        self._served = False  # the current connection delivered a snapshot or data
        self._pacer: Pacer | None = None  # the current connection's request pacing
        self._per_resume = STREAMS_PER_REQUEST
        self._runner: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self._end: Exception | None = None  # why the stream ended by itself
        self._ended = False
        self._closed = False

    # --- public ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is up and every stream has been asked to resume on it."""
        return self._ws is not None and self._ready

    @property
    def buffered(self) -> int:
        """Events (snapshots and resets included) waiting for the consumer."""
        return len(self._items)

    async def __aenter__(self) -> Stream:
        ws, hello = await self._open()
        self._runner = asyncio.create_task(self._run(ws, hello), name=f"stockpush-client {self.url}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (1000) and stop; pending requests fail, iteration ends."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._runner, *self._retries) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fail_requests(ClientError("the stream was closed"))
        self._readable.set()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> StreamEvent:
        tracker = self._tracker
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._items:
                event, pos = self._items.popleft()
                self._room.set()
                if tracker.behind and len(self._items) <= self.buffer // 2:
                    await self._resume(tracker.take_behind())
                if tracker.positions.get((pos.ch, pos.sym)) is pos:
                    return event
                continue  # unsubscribed since
            if self._ended:
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()

    async def subscribe(
        self,
        symbols: Sequence[str],
        *,
        channels: Sequence[str] | None = None,
        throttle_ms: int = 0,
    ) -> AckMessage:
        """Subscribe to channels x symbols ("*": every symbol); a snapshot of each stream comes first.

        Without `channels`, the server's default (trades and quotes). Raises SubscribeError when
        the server refuses the request or any stream of it (the others stay subscribed).
        """
        _check_symbols(symbols)
        body: dict[str, Any] = {"op": "subscribe", "symbols": list(symbols)}
        if channels is not None:
            unknown = [ch for ch in channels if ch not in KNOWN_CHANNELS]
            if unknown:
                raise ValueError(f"unknown channel(s) {', '.join(unknown)}; channels are {', '.join(KNOWN_CHANNELS)}")
            body["channels"] = list(channels)
        if throttle_ms:
            body["throttle_ms"] = throttle_ms
        ack = await self._request(body, "subscribe", throttle_ms)
        if ack.failed:
            reasons: dict[str, list[str]] = {}
            for failed in ack.failed:
                reasons.setdefault(failed.message, []).append(failed.ch)
            refused = "; ".join(f"{message} ({', '.join(chs)})" for message, chs in reasons.items())
            raise SubscribeError(f"the server refused: {refused}", ack=ack)
        return ack

    async def unsubscribe(
        self, symbols: Sequence[str] | None = None, *, channels: Sequence[str] | None = None
    ) -> AckMessage:
        """Unsubscribe channels x symbols (every channel if none given), or everything without symbols.

        Events of those streams still buffered are not handed over any more.
        """
        body: dict[str, Any]
        positions = self._tracker.positions
        if symbols is None:
            body = {"op": "unsubscribe", "all": True}
            keys = list(positions)
        else:
            _check_symbols(symbols)
            body = {"op": "unsubscribe", "symbols": list(symbols)}
            if channels is not None:
                body["channels"] = list(channels)
            wanted = {s.upper() for s in symbols}
            keys = [
                (ch, sym)
                for ch, sym in positions
                if ("*" in wanted or sym in wanted) and (channels is None or ch in channels)
            ]
        self._tracker.forget(keys)
        return await self._request(body, "unsubscribe", 0)

    # --- requests ------------------------------------------------------------------------

    async def _request(
        self, body: dict[str, Any], kind: Literal["subscribe", "unsubscribe"], throttle_ms: int
    ) -> AckMessage:
        if self._closed or self._ended:
            raise ClientError("the stream is closed") from self._end
        future: asyncio.Future[AckMessage] = asyncio.get_running_loop().create_future()
        request = _Request(f"{kind[0]}{next(self._ids)}", body, kind, throttle_ms, future)
        self._requests[request.id] = request
        self._room.set()  # a reader waiting for room reads on until this is answered
        try:
            if self.connected:
                await self._send(request)
            async with asyncio.timeout(self.request_timeout):
                return await future
        except TimeoutError:
            raise ClientError(f"no answer to {kind} within {self.request_timeout} s; it was abandoned") from None
        finally:
            # Abandoned on timeout or cancellation: a late ack is then ignored.
            self._requests.pop(request.id, None)

    async def _resume(self, positions: list[Position]) -> None:
        """Ask for these streams from their position (in-band, on the current connection)."""
        for body, throttle_ms in resume_requests(positions, self._per_resume):
            await self._send(self._own(body, "resume", throttle_ms))

    def _own(self, body: dict[str, Any], kind: Literal["subscribe", "resume"], throttle_ms: int) -> _Request:
        request = _Request(f"{kind[0]}{next(self._ids)}", body, kind, throttle_ms)
        self._requests[request.id] = request
        return request

    async def _send(self, request: _Request) -> None:
        ws = self._ws
        if ws is None:
            return  # sent when the next connection is up
        serial = request.sent_on = self._serial
        wait = self._pacer.delay() if self._pacer is not None else 0.0
        if wait:
            await asyncio.sleep(wait)
            if self._ws is not ws or self._serial != serial:
                return  # that connection is gone; the next one sends it
        with contextlib.suppress(ConnectionClosed):  # the runner sees it too, and reconnects
            await ws.send(orjson.dumps({"id": request.id, **request.body}).decode())

    def _fail_requests(self, exc: Exception) -> None:
        for request in self._requests.values():
            if request.future is not None and not request.future.done():
                request.future.set_exception(exc)
        self._requests.clear()

    # --- connections ---------------------------------------------------------------------

    async def _open(self) -> tuple[ClientConnection, HelloMessage]:
        """Connect and read hello. Raises ConnectError, or FatalCloseError for a 40xx close."""
        try:
            ws = await ws_connect(
                self.url,
                open_timeout=self.open_timeout,
                ping_interval=None,  # the heartbeat watchdog covers dead connections
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                proxy=self._proxy,
            )
        except InvalidURI as exc:
            raise ConnectError(f"{self.url!r} is not a ws:// or wss:// URL ({exc})") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {_describe(exc)}") from exc
        error: ErrorMessage | None = None
        try:
            async with asyncio.timeout(self.open_timeout):
                while True:
                    message = _parse(await ws.recv())
                    if isinstance(message, HelloMessage):
                        break
                    if isinstance(message, ErrorMessage):
                        error = message
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code is not None and code in FATAL_CLOSE:
                raise FatalCloseError(code, exc.rcvd.reason if exc.rcvd else "", error) from None
            raise ConnectError(f"{self.url} closed the connection before hello (code {code})") from exc
        except TimeoutError:
            await ws.close()
            raise ConnectError(f"{self.url} sent no hello within {self.open_timeout} s") from None
        except ServerProtocolError:
            await ws.close()
            raise
        if message.protocol != PROTOCOL and not message.protocol.startswith(PROTOCOL + "."):
            await ws.close()
            raise ServerProtocolError(f"{self.url} speaks {message.protocol!r}; this client speaks {PROTOCOL!r}")
        self.hello = message
        self.stats.connects += 1
        return ws, message

    async def _run(self, ws: ClientConnection, hello: HelloMessage) -> None:
        """Serve connections until closed: reconnect after each drop, by the close-code bands."""
        attempt = 0
        try:
            while True:
                closed = await self._serve(ws, hello)
                if closed.code is not None and closed.code in FATAL_CLOSE:
                    raise FatalCloseError(closed.code, closed.reason, closed.error)
                if closed.served:
                    attempt = 0
                delay = self._delay(closed, attempt)
                how = f"code {closed.code}" if closed.code is not None else closed.reason
                log.warning("Connection to %s lost (%s); reconnecting in %.2f s", self.url, how, delay)
                while True:
                    await asyncio.sleep(delay)
                    attempt += 1
                    try:
                        ws, hello = await self._open()
                        break
                    except ConnectError as exc:
                        limit = self.backoff.max_attempts
                        if limit is not None and attempt >= limit:
                            raise ConnectError(f"gave up after {attempt} attempts: {exc}") from exc
                        delay = self.backoff.delay(attempt, self._rng())
                        log.warning("%s; next attempt in %.2f s", exc, delay)
                self.stats.reconnects += 1
                log.info("Reconnected to %s; resuming %d streams", self.url, len(self._tracker.positions))
        except Exception as exc:
            log.error("Stream from %s ended: %s", self.url, exc)
            self._end = exc
            self._fail_requests(exc)
        finally:
            self._ended = True
            self._readable.set()

    def _delay(self, closed: _Closed, attempt: int) -> float:
        code = closed.code
        if code is not None and code in RESUME_NOW_CLOSE and attempt == 0:
            return self._rng() * self.backoff.immediate_s
        delay = self.backoff.delay(attempt, self._rng())
        if code in BACKOFF_CLOSE and closed.error is not None and closed.error.retry_after_ms:
            delay = max(delay, closed.error.retry_after_ms / 1000)
        return delay

    async def _serve(self, ws: ClientConnection, hello: HelloMessage) -> _Closed:
        """Resume every stream on this connection, then read it until it ends."""
        self._serial += 1
        self._ws, self._ready, self._last_error, self._served = ws, False, None, False
        self._pacer = Pacer(hello.limits.inbound_rate.per_s, hello.limits.inbound_rate.burst)
        self._per_resume = streams_per_resume(hello)
        silence_s = self.missed_heartbeats * hello.heartbeat_ms / 1000 if self.missed_heartbeats else None
        # Requests go out paced, so they are sent alongside the reading, never instead of it.
        resubscribe = asyncio.create_task(self._resubscribe(), name=f"stockpush-client resubscribe {self.url}")
        try:
            while True:
                failure = resubscribe.exception() if resubscribe.done() and not resubscribe.cancelled() else None
                if failure is not None:
                    raise failure  # a bug: end loudly
                raw = await _receive(ws, silence_s)
                if raw is None:
                    log.warning("Nothing from %s for %.1f s (%g heartbeats): the connection is dead",
                                self.url, silence_s, self.missed_heartbeats)  # fmt: skip
                    ws.transport.abort()
                    return _Closed(None, "heartbeat timeout", None, self._served)
                await self._handle(raw)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (None, "dropped")
            return _Closed(code, reason, self._last_error, self._served)
        finally:
            self._ws, self._ready = None, False
            resubscribe.cancel()
            await asyncio.wait([resubscribe])
            if ws.state is not State.CLOSED:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _resubscribe(self) -> None:
        for request_id in [rid for rid, r in self._requests.items() if r.future is None]:
            del self._requests[request_id]  # the client's own requests are rebuilt from positions
        resume, fresh = self._tracker.reconnected()
        await self._resume(resume)
        for body, throttle_ms in fresh_requests(fresh):
            await self._send(self._own(body, "subscribe", throttle_ms))
        self._ready = True
        for request in list(self._requests.values()):
            if request.future is not None and request.sent_on != self._serial:
                await self._send(request)

    async def _handle(self, raw: str | bytes) -> None:
        message = _parse(raw)
        tracker = self._tracker
        deliveries: list[Delivery] = []
        if isinstance(message, DataMessage | SnapshotMessage):
            self._served = True
        if isinstance(message, DataMessage):
            # Wait for room for the whole frame (the buffer may hold less), unless a request
            # waits for its answer: then read on, and leave what does not fit with the server.
            if len(self._items) > max(0, self.buffer - len(message.events)) and not self._awaiting():
                self.stats.stalls += 1
                while len(self._items) > max(0, self.buffer - len(message.events)) and not self._awaiting():
                    self._room.clear()
                    await self._room.wait()
            deliveries = tracker.on_data(message, room=self.buffer - len(self._items))
        elif isinstance(message, SnapshotMessage):
            deliveries = tracker.on_snapshot(message)
        elif isinstance(message, ResetMessage):
            deliveries = tracker.on_reset(message)
        elif isinstance(message, AckMessage):
            deliveries = self._on_ack(message)
        elif isinstance(message, ErrorMessage):
            self._on_error(message)
        elif isinstance(message, NoticeMessage):
            log.info("Notice from %s: %s (%s)", self.url, message.message, message.code)
        if tracker.resync:
            gaps = [p for p in tracker.resync if tracker.positions.get((p.ch, p.sym)) is p]
            tracker.resync.clear()
            await self._resume(gaps)
        if deliveries:
            self._items.extend(deliveries)
            self._readable.set()

    def _awaiting(self) -> bool:
        return any(r.future is not None for r in self._requests.values())

    def _on_ack(self, ack: AckMessage) -> list[Delivery]:
        request = self._requests.pop(ack.id, None) if isinstance(ack.id, str) else None
        if request is None:
            return []
        deliveries: list[Delivery] = []
        if request.kind != "unsubscribe":
            deliveries = self._tracker.on_ack(ack, resume=request.kind == "resume", throttle_ms=request.throttle_ms)
        if request.future is not None and not request.future.done():
            request.future.set_result(ack)
        return deliveries

    def _on_error(self, error: ErrorMessage) -> None:
        if error.fatal:
            log.warning("Fatal error from %s: %s (%s); it closes the connection", self.url, error.message, error.code)
            self._last_error = error
            return
        request = self._requests.get(error.id) if isinstance(error.id, str) else None
        if request is None:
            log.warning("Error from %s: %s (%s)", self.url, error.message, error.code)
            return
        if error.code == "RATE_LIMITED":
            delay = (error.retry_after_ms or 1000) / 1000
            log.info("Request %s was rate limited; sending it again in %.2f s", request.id, delay)
            task = asyncio.create_task(self._send_later(request, request.sent_on, delay))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return
        del self._requests[request.id]
        if request.future is None:
            raise ServerProtocolError(f"the server refused the client's own {request.kind} request: "
                                      f"{error.message} ({error.code})")  # fmt: skip
        if not request.future.done():
            request.future.set_exception(SubscribeError(f"{error.message} ({error.code})", error=error))

    async def _send_later(self, request: _Request, sent_on: int, delay: float) -> None:
        await asyncio.sleep(delay)
        # Unless it was answered or already sent again on a new connection.
        if self._requests.get(request.id) is request and request.sent_on == sent_on == self._serial:
            await self._send(request)


KNOWN_CHANNELS: tuple[str, ...] = tuple(
    ch
    for model in (TradeEvent, QuoteEvent, StatusEvent, BarEvent)
    for ch in get_args(model.model_fields["ch"].annotation)
)
CLOSE_TIMEOUT_S = 2.0  # how long our own close waits for the server's answer


def connect(
    url: str,
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
    open_timeout: float | None = 10.0,
    request_timeout: float | None = 10.0,
    missed_heartbeats: float | None = 3.0,
    buffer: int = DEFAULT_BUFFER,
    proxy: str | Literal[True] | None = True,
    clock: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
) -> Stream:
    """A stream from `url` (e.g. ws://127.0.0.1:8000/v1/stream), to use as `async with connect(url) as stream`.

    - backoff: when to reconnect (see Backoff); the close-code bands decide which delay applies.
    - open_timeout: seconds for the connection and its hello; request_timeout: for an ack.
    - missed_heartbeats: silence for this many heartbeat_ms (from hello) means a dead
      connection; None disables the watchdog.
    - buffer: events waiting for the consumer at most (see Stream).
    - proxy: as in websockets (True: from the environment; None: none).
    - clock, rng: time.time and random.random, replaceable in tests.

    Entering raises ConnectError when the server cannot be reached: only later drops are retried.
    """
    return Stream(
        url,
        backoff=backoff,
        open_timeout=open_timeout,
        request_timeout=request_timeout,
        missed_heartbeats=missed_heartbeats,
        buffer=buffer,
        proxy=proxy,
        clock=clock,
        rng=rng,
    )


class BlockingStream:
    """The same stream for scripts that are not async: its event loop runs in a helper thread.

    with connect_sync(url) as stream:
        stream.subscribe(["AAPL"], channels=["trades"])
        for event in stream:
            ...
    """

    def __init__(self, make: Callable[[], Stream]) -> None:
        self._make = make
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stockpush-client", daemon=True)
        self._stream: Stream | None = None

    @property
    def stream(self) -> Stream:
        if self._stream is None:
            raise RuntimeError("use the blocking stream inside 'with connect_sync(...) as stream:'")
        return self._stream

    @property
    def stats(self) -> Stats:
        return self.stream.stats

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting
            raise

    async def _enter(self) -> Stream:
        stream = self._make()
        await stream.__aenter__()
        return stream

    def __enter__(self) -> BlockingStream:
        self._thread.start()
        try:
            self._stream = self._call(self._enter())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._stream is not None:
                self._call(self._stream.aclose())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def subscribe(
        self, symbols: Sequence[str], *, channels: Sequence[str] | None = None, throttle_ms: int = 0
    ) -> AckMessage:
        return self._call(self.stream.subscribe(symbols, channels=channels, throttle_ms=throttle_ms))

    def unsubscribe(self, symbols: Sequence[str] | None = None, *, channels: Sequence[str] | None = None) -> AckMessage:
        return self._call(self.stream.unsubscribe(symbols, channels=channels))

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        try:
            return self._call(self.stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None


def connect_sync(url: str, **options: Any) -> BlockingStream:
    """`connect()` for code that is not async: `with connect_sync(url) as stream: for event in stream: ...`."""
    return BlockingStream(lambda: connect(url, **options))


# --- helpers -------------------------------------------------------------------------------


def _parse(raw: str | bytes) -> Any:
    try:
        return parse_server_message(raw)
    except ValidationError as exc:
        if any(err["type"] == "union_tag_invalid" and err["loc"][:2] == ("data", "events") for err in exc.errors()):
            # Events of channels this version does not know are ignored (never subscribed to).
            message = orjson.loads(raw)
            known = [e for e in message["events"] if isinstance(e, dict) and e.get("ch") in KNOWN_CHANNELS]
            return _parse(orjson.dumps({**message, "events": known}))
        raise ServerProtocolError(f"the server sent a frame this client cannot read: {exc}") from None


async def _receive(ws: ClientConnection, silence_s: float | None) -> str | bytes | None:
    """The next frame; None after `silence_s` without one (the watchdog)."""
    if silence_s is None:
        return await ws.recv()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(silence_s):
            return await ws.recv()
    # One more short wait: if this event loop itself was busy, a frame may be waiting already.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WATCHDOG_GRACE_S):
            return await ws.recv()
    return None


def _check_symbols(symbols: Sequence[str]) -> None:
    if isinstance(symbols, str):
        raise TypeError(f"symbols must be a list, e.g. [{symbols!r}], not a string")
    if not symbols:
        raise ValueError("give at least one symbol, or '*' for every symbol")


def _describe(exc: BaseException) -> str:
    """Why a connection attempt failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError) or f"[Errno {errno.ECONNREFUSED}]" in str(exc):
        return "connection refused (is the server running?)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code} instead of a WebSocket handshake (wrong path?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
