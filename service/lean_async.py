"""asyncio's Queue and Event as uvicorn's WebSocket protocol uses them, without their deques.

Each uvicorn connection holds an `asyncio.Queue` (three deques and an Event with a fourth)
and an `asyncio.Event`: ~3.5 KB of empty 64-slot deque blocks per connection, of a
connection's ~24 KB, for a queue that one reader drains and an event that at most one
sender waits on. These keep their waiters in a list, created empty (56 bytes).
"""

from __future__ import annotations

import asyncio
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class LeanQueue(Generic[T]):
    """An unbounded FIFO with one consumer: `put_nowait`, `get`, `empty`, `qsize`."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> T:
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("LeanQueue.get() is already awaited: it has one consumer")
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                self._getter = None
        # Items are a handful at most (the reader pauses the socket past one): pop(0) is cheap.
        return self._items.pop(0)


class LeanEvent:
    """asyncio.Event's `is_set`, `set`, `clear` and `wait`, with the same semantics."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            # Every waiter wakes, even if the event is cleared again before it runs.
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
