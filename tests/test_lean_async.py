"""LeanQueue and LeanEvent behave as the asyncio.Queue and asyncio.Event they stand in for."""

from __future__ import annotations

import asyncio

import pytest

from service.lean_async import LeanEvent, LeanQueue


async def test_queue_is_fifo_and_wakes_its_consumer() -> None:
    queue: LeanQueue[int] = LeanQueue()
    assert queue.empty()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await getter == 1
    assert queue.qsize() == 1
    assert await queue.get() == 2
    assert queue.empty()


async def test_queue_get_cancelled_loses_nothing_and_can_wait_again() -> None:
    queue: LeanQueue[str] = LeanQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    queue.put_nowait("kept")
    async with asyncio.timeout(1):
        assert await queue.get() == "kept"


async def test_queue_refuses_a_second_consumer() -> None:
    queue: LeanQueue[int] = LeanQueue()
    first = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one consumer"):
        await queue.get()
    queue.put_nowait(7)
    assert await first == 7


async def test_event_wakes_every_waiter_even_if_cleared_at_once() -> None:
    event = LeanEvent()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    event.clear()  # asyncio.Event: a woken waiter returns True all the same
    async with asyncio.timeout(1):
        assert await asyncio.gather(*waiters) == [True, True, True]
    assert not event.is_set()
    assert event._waiters == []


async def test_event_set_returns_at_once_and_a_cancelled_waiter_leaves() -> None:
    assert await LeanEvent(value=True).wait() is True
    event = LeanEvent()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert event._waiters == []
    event.set()
    assert event.is_set()


async def test_queue_getter_woken_then_cancelled_keeps_the_item() -> None:
    queue: LeanQueue[int] = LeanQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(5)  # wakes the getter...
    getter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert queue.qsize() == 1
    assert await queue.get() == 5
