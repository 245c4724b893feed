"""A trading-bot skeleton: a 20-trade moving average per symbol, from every trade, in order.

python examples/moving_average.py AAPL MSFT      # the server from STOCKPUSH_URL
"""

import asyncio
import os
import sys
from collections import defaultdict, deque

from service.client import TradeEvent, connect

URL = os.environ.get("STOCKPUSH_URL", "ws://127.0.0.1:8000/v1/stream")


async def main(symbols: list[str], window: int = 20) -> None:
    prices: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
    async with connect(URL) as stream:  # reconnects and resumes by itself
        await stream.subscribe(symbols, channels=["trades"])
        async for event in stream:
            if isinstance(event, TradeEvent):
                recent = prices[event.sym]
                recent.append(event.price)
                print(f"{event.sym} {event.price} ma{len(recent)} {sum(recent) / len(recent):.4f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["AAPL"]))
