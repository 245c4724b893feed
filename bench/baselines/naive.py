"""The baseline: a push server the way a tutorial writes it.

Starlette + uvicorn, a set of sockets per symbol, and `await ws.send_json(tick)` for every
subscriber of every tick. It generates the same load as the synthetic feed (trades at a
total rate, round-robin over N symbols, in bursts every 5 ms, stamped with the wall clock)
so that the benchmark compares the serving, not the feeds.

    python -m bench.baselines.naive --port 8001 --rate 10000 --symbols 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def create_app(rate: float, symbols: int, burst_ms: int = 5) -> Starlette:
    names = [f"S{i:04d}" for i in range(symbols)]
    subscribers: dict[str, set[WebSocket]] = {name: set() for name in names}

    async def publisher() -> None:
        rng = random.Random(1)
        prices = [100.0] * symbols
        seqs = [0] * symbols
        loop = asyncio.get_running_loop()
        interval = burst_ms / 1000
        due = 0.0
        index = 0
        next_at = last = loop.time()
        while True:
            now = loop.time()
            due += rate * (now - last)
            last = now
            count = int(due)
            due -= count
            ts = int(time.time() * 1000)
            for _ in range(count):
                name = names[index]
                prices[index] = round(max(1.0, prices[index] + rng.choice((-0.01, 0.01))), 2)
                seqs[index] += 1
                tick = {"ch": "trades", "sym": name, "seq": seqs[index], "ts": ts, "price": prices[index], "size": 100}
                for ws in list(subscribers[name]):
                    try:
                        await ws.send_json(tick)
                    except (WebSocketDisconnect, RuntimeError, OSError):
                        subscribers[name].discard(ws)
                index = (index + 1) % symbols
            next_at = max(next_at + interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        joined: list[str] = []
        try:
            while True:
                message = await ws.receive_json()
                if message.get("op") == "subscribe":
                    for name in message.get("symbols", []):
                        if name in subscribers:
                            subscribers[name].add(ws)
                            joined.append(name)
        except WebSocketDisconnect:
            pass
        finally:
            for name in joined:
                subscribers[name].discard(ws)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(publisher())
        yield
        task.cancel()

    return Starlette(routes=[WebSocketRoute("/v1/stream", stream)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--symbols", type=int, default=100)
    args = parser.parse_args()
    # uvicorn's defaults, as a tutorial would leave them.
    uvicorn.run(create_app(args.rate, args.symbols), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
