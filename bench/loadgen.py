"""Load generator: many WebSocket clients in one process (picows), reporting JSON on stdout.

Modes:
  stream  N clients each subscribe to K of the symbols and count what arrives for a while;
          a sample of them parses every frame to measure latency and check seq gaps.
  hold    N clients connect and stay idle until stdin closes (memory per connection).
  churn   connect + subscribe + first answer + close, as fast as possible, with C in flight.

Run pinned to its own core (the orchestrator does `taskset -c 1`); it reports its own CPU
use so a saturated load generator is visible in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import os
import random
import re
import socket
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

SEQ = b'"seq":'
SYM_SEQ = re.compile(rb'(?:"prev_seq":(\d+),)?"ch":"([^"]+)","sym":"([^"]+)","seq":(\d+),"ts":(\d+)')


class Client(WSListener):
    """Counts events; when `checked`, parses every one for latency and gaps."""

    def __init__(self, subscribe: bytes, checked: bool, stats: Stats) -> None:
        self.subscribe = subscribe
        self.checked = checked
        self.stats = stats
        self.last: dict[bytes, int] = {}
        self.transport: WSTransport | None = None
        self.closed_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.send(WSMsgType.TEXT, self.subscribe)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self.closed_code = frame.get_close_code().value
            return
        if frame.msg_type is not WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        stats = self.stats
        if not stats.measuring:
            if self.checked:
                self._track(payload, record=False)
            return
        stats.frames += 1
        if self.checked:
            self._track(payload, record=True)
        else:
            stats.events += payload.count(SEQ)

    def _track(self, payload: bytes, record: bool) -> None:
        now_ms = time.time() * 1000
        stats = self.stats
        for prev, ch, sym, seq_b, ts_b in SYM_SEQ.findall(payload):
            key = ch + b"/" + sym
            seq = int(seq_b)
            last = self.last.get(key)
            if last is not None and seq != last + 1 and not (prev and int(prev) == last):
                stats.gaps += 1
            self.last[key] = seq
            if record:
                stats.events += 1
                stats.latencies.append(now_ms - int(ts_b))
                stats.received.append(now_ms)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.stats.disconnects += 1


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.frames = 0
        self.events = 0
        self.gaps = 0
        self.disconnects = 0
        # An array, not a list: a list of a million floats is walked by every full garbage
        # collection of this process, and those pauses would show up as server latency.
        self.latencies = array("d")
        self.received = array("d")  # when each latency sample arrived (ms since the epoch)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timeline(stats: Stats, start_ms: float, step_ms: float = 500) -> list[float | None]:
    """p99 latency per `step_ms` slice of the window: shows where a tail comes from."""
    buckets: dict[int, list[float]] = {}
    for at, latency in zip(stats.received, stats.latencies, strict=True):
        buckets.setdefault(int((at - start_ms) // step_ms), []).append(latency)
    return [percentile(buckets.get(i, []), 0.99) for i in range(max(buckets, default=-1) + 1)]


def subscribe_message(protocol: str, symbols: list[str]) -> bytes:
    if protocol == "stockpush":
        return orjson.dumps({"op": "subscribe", "channels": ["trades"], "symbols": symbols, "snapshot": False})
    return orjson.dumps({"op": "subscribe", "symbols": symbols})


def pick_symbols(rng: random.Random, universe: list[str], k: int) -> list[str]:
    return rng.sample(universe, k)


async def run_stream(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    universe = [f"S{i:04d}" for i in range(args.symbols)]
    stats = Stats()
    n_checked = max(1, round(args.clients * args.check_fraction))
    clients: list[Client] = []
    errors = 0
    sem = asyncio.Semaphore(200)

    async def open_one(i: int) -> None:
        nonlocal errors
        message = subscribe_message(args.protocol, pick_symbols(rng, universe, args.per_client))
        async with sem:
            try:
                _, client = await ws_connect(
                    lambda: Client(message, i < n_checked, stats), args.url, max_frame_size=64 * 1024 * 1024
                )
            except Exception:
                errors += 1
                return
        clients.append(client)  # type: ignore[arg-type]

    await asyncio.gather(*(open_one(i) for i in range(args.clients)))
    slow = [
        await open_slow(args.url, subscribe_message(args.protocol, universe[: args.per_client]))
        for _ in range(args.slow)
    ]
    await asyncio.sleep(args.warmup)
    process_start = os.times()
    window_start = time.time()  # the bench reads the server's CPU over this same window
    wall_start = time.monotonic()
    stats.measuring = True
    await asyncio.sleep(args.duration)
    stats.measuring = False
    wall = time.monotonic() - wall_start
    window_end = time.time()
    process_end = os.times()
    cpu = (process_end.user - process_start.user) + (process_end.system - process_start.system)
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()
    slow_codes = [await close_code_of(sock) for sock in slow]
    return {
        "clients": len(clients),
        "connect_errors": errors,
        "slow_close_codes": slow_codes,  # per stalled client: the server's close code, None if none came
        "events": stats.events,
        "events_per_s": stats.events / wall,
        "frames_per_s": stats.frames / wall,
        "events_per_frame": stats.events / stats.frames if stats.frames else 0,
        "gaps": stats.gaps,
        "disconnects": stats.disconnects,
        "latency_ms": {
            "samples": len(stats.latencies),
            "p50": percentile(stats.latencies, 0.50),
            "p99": percentile(stats.latencies, 0.99),
            "p999": percentile(stats.latencies, 0.999),
            "max": max(stats.latencies) if stats.latencies else None,
            "p99_per_half_s": timeline(stats, window_start * 1000),
        },
        "loadgen_cpu": cpu / wall,
        "seconds": wall,
        "window": [window_start, window_end],
    }


async def close_code_of(sock: socket.socket, limit_s: float = 5.0) -> int | None:
    """Read what a stalled client left unread, then close it: the server's close code.

    None when no close frame came within `limit_s` (the server kept the connection open,
    or its close frame was lost when it gave up waiting for ours).
    """
    loop = asyncio.get_running_loop()
    tail = b""
    deadline = loop.time() + limit_s
    try:
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 0.2)
            except TimeoutError:
                break  # nothing more for now
            if not chunk:
                break  # the server closed the connection
            tail = (tail + chunk)[-256:]
    except OSError:
        pass  # reset by the server: what was read so far is all there is
    finally:
        sock.close()
    return _close_code(tail)


def _close_code(tail: bytes) -> int | None:
    """The code of a close frame that ends `tail` (0x88, length, code, reason), else None.

    A close frame is the last thing a server sends, so it must end exactly at the end of
    what was read; a 0x88 byte elsewhere (in a data frame's 2-byte length) does not count.
    """
    at = tail.rfind(b"\x88")
    while at >= 0:
        length = tail[at + 1] if at + 1 < len(tail) else -1
        if length == len(tail) - at - 2 and (length == 0 or 2 <= length <= 125):
            return 1005 if length == 0 else int.from_bytes(tail[at + 2 : at + 4], "big")  # 1005: no code given
        at = tail.rfind(b"\x88", 0, at)
    return None


async def open_slow(url: str, subscribe: bytes) -> socket.socket:
    """A client that subscribes, then never reads: tiny receive buffer, no reader at all."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (parsed.hostname, parsed.port))
    key = base64.b64encode(os.urandom(16)).decode()  # RFC 6455: 16 random bytes (a wrong length is refused)
    request = (
        f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    await loop.sock_sendall(sock, request)
    response = b""
    while b"\r\n\r\n" not in response:
        byte = await loop.sock_recv(sock, 1)  # byte by byte: leave frames unread
        if not byte:
            break
        response += byte
    if not response.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise RuntimeError(f"the stalled client's handshake was refused: {response.splitlines()[:1]!r}")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(subscribe))
    header = (
        bytes([0x81, 0x80 | len(subscribe)])
        if len(subscribe) < 126
        else bytes([0x81, 0xFE]) + len(subscribe).to_bytes(2, "big")
    )
    await loop.sock_sendall(sock, header + mask + masked)
    return sock


class Idle(WSListener):
    pass


async def run_hold(args: argparse.Namespace) -> dict[str, Any]:
    transports: list[WSTransport] = []
    errors = 0
    sem = asyncio.Semaphore(200)

    async def open_one() -> None:
        nonlocal errors
        async with sem:
            try:
                transport, _ = await ws_connect(Idle, args.url)
            except Exception:
                errors += 1
                return
        transports.append(transport)

    await asyncio.gather(*(open_one() for _ in range(args.clients)))
    print(orjson.dumps({"ready": True, "clients": len(transports), "connect_errors": errors}).decode(), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for transport in transports:
        transport.disconnect()
    return {"clients": len(transports), "connect_errors": errors}


class OneAnswer(WSListener):
    """Subscribes and waits for the ack; a server whose protocol has no ack is done at once."""

    def __init__(self, subscribe: bytes, done: asyncio.Future[bool], wait_ack: bool) -> None:
        self.subscribe = subscribe
        self.done = done
        self.wait_ack = wait_ack

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, self.subscribe)
        if not self.wait_ack and not self.done.done():
            self.done.set_result(True)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if (
            frame.msg_type is WSMsgType.TEXT
            and b'"type":"ack"' in frame.get_payload_as_bytes()
            and not self.done.done()
        ):
            self.done.set_result(True)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.done.done():
            self.done.set_result(False)


async def run_churn(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.duration
    ok = 0
    errors = 0
    message = subscribe_message(args.protocol, ["S0000"])
    wait_ack = args.protocol == "stockpush"

    async def worker() -> None:
        nonlocal ok, errors
        while loop.time() < deadline:
            done: asyncio.Future[bool] = loop.create_future()
            try:
                transport, _ = await ws_connect(
                    functools.partial(OneAnswer, message, done, wait_ack), args.url, websocket_handshake_timeout=5
                )
                answered = await asyncio.wait_for(done, 5)
                transport.send_close()
                transport.disconnect()
            except Exception:
                errors += 1
                continue
            if answered:
                ok += 1
            else:
                errors += 1

    started = os.times()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    ended = os.times()
    cpu = (ended.user - started.user) + (ended.system - started.system)
    return {"connects_per_s": ok / args.duration, "ok": ok, "errors": errors, "loadgen_cpu": cpu / args.duration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["stream", "hold", "churn"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol", choices=["stockpush", "naive"], default="stockpush")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--slow", type=int, default=0, help="extra clients that never read")
    parser.add_argument("--check-fraction", type=float, default=0.1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - optional speed-up for the load generator only
        pass
    runner = {"stream": run_stream, "hold": run_hold, "churn": run_churn}[args.mode]
    result = asyncio.run(runner(args))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
