"""Freezing connections' objects (service.gcfreeze): the policy, then a real server."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import httpx
import pytest

from service.gcfreeze import CHECK_S, MIN_NEW, THAW_AFTER_S, ConnectionFreezer, GcHooks
from tests.helpers import Server, make_settings, open_client


class FakeCollector:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.full = 0

    def hooks(self) -> GcHooks:
        return GcHooks(
            freeze=lambda: self.calls.append("freeze"),
            unfreeze=lambda: self.calls.append("unfreeze"),
            full_collections=lambda: self.full,
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gc_fake() -> tuple[FakeCollector, Clock, ConnectionFreezer]:
    fake, clock = FakeCollector(), Clock()
    return fake, clock, ConnectionFreezer(fake.hooks(), clock=clock)


def ticks(freezer: ConnectionFreezer, clock: Clock, seconds: float, connections: int, opened: int, closed: int) -> None:
    for _ in range(round(seconds / CHECK_S)):
        clock.now += CHECK_S
        freezer.check(connections, opened, closed)


def test_freezes_each_wave_of_new_connections(gc_fake: tuple[FakeCollector, Clock, ConnectionFreezer]) -> None:
    fake, clock, freezer = gc_fake
    # A ramp: frozen as it comes, at each check with enough new connections.
    for n in (100, 200, 300):
        ticks(freezer, clock, CHECK_S, n, n, 0)
    assert fake.calls == ["freeze"] * 3
    assert freezer.frozen == 300
    # Steady: nothing new, nothing more to freeze.
    ticks(freezer, clock, 10.0, 300, 300, 0)
    assert fake.calls == ["freeze"] * 3
    ticks(freezer, clock, CHECK_S, 300 + MIN_NEW - 1, 300 + MIN_NEW - 1, 0)
    assert fake.calls == ["freeze"] * 3  # too few new ones
    ticks(freezer, clock, CHECK_S, 300 + MIN_NEW, 300 + MIN_NEW, 0)
    assert fake.calls == ["freeze"] * 4
    assert freezer.frozen == 300 + MIN_NEW


def test_few_connections_are_not_worth_a_freeze(gc_fake: tuple[FakeCollector, Clock, ConnectionFreezer]) -> None:
    fake, clock, freezer = gc_fake
    ticks(freezer, clock, 10.0, MIN_NEW - 1, MIN_NEW - 1, 0)
    assert fake.calls == []
    ticks(freezer, clock, CHECK_S, MIN_NEW, MIN_NEW, 0)
    assert fake.calls == ["freeze"]


def test_replaced_connections_are_frozen_too(gc_fake: tuple[FakeCollector, Clock, ConnectionFreezer]) -> None:
    fake, clock, freezer = gc_fake
    ticks(freezer, clock, CHECK_S, 1000, 1000, 0)
    # Churn that keeps the count: the newcomers are what is not frozen yet.
    ticks(freezer, clock, CHECK_S, 1000, 1000 + MIN_NEW, MIN_NEW)
    assert fake.calls == ["freeze", "freeze"]


def test_thaws_after_a_quarter_closed_and_refreezes_only_after_a_full_collection(
    gc_fake: tuple[FakeCollector, Clock, ConnectionFreezer],
) -> None:
    fake, clock, freezer = gc_fake
    ticks(freezer, clock, CHECK_S, 1000, 1000, 0)
    ticks(freezer, clock, CHECK_S, 751, 1000, 249)
    assert fake.calls == ["freeze"]  # under a quarter closed: their cycles may wait
    ticks(freezer, clock, CHECK_S, 750, 1000, 250)
    assert fake.calls == ["freeze", "unfreeze"]
    assert freezer.frozen == 0
    # Steady again, but what the thaw released must be reclaimed before a freeze.
    ticks(freezer, clock, 10.0, 750, 1000, 250)
    assert fake.calls == ["freeze", "unfreeze"]
    fake.full += 1
    ticks(freezer, clock, CHECK_S, 750, 1000, 250)
    assert fake.calls == ["freeze", "unfreeze", "freeze"]
    assert freezer.frozen == 750


def test_a_small_server_thaws_after_min_new_closed(gc_fake: tuple[FakeCollector, Clock, ConnectionFreezer]) -> None:
    fake, clock, freezer = gc_fake
    ticks(freezer, clock, CHECK_S, 60, 60, 0)
    # 60 frozen: a quarter would be 15, but fewer than MIN_NEW closes are not worth a thaw.
    ticks(freezer, clock, CHECK_S, 60, 60 + MIN_NEW - 1, MIN_NEW - 1)
    assert fake.calls == ["freeze"]
    ticks(freezer, clock, CHECK_S, 60, 60 + MIN_NEW, MIN_NEW)
    assert fake.calls == ["freeze", "unfreeze"]


def test_closes_count_across_freezes(gc_fake: tuple[FakeCollector, Clock, ConnectionFreezer]) -> None:
    fake, clock, freezer = gc_fake
    ticks(freezer, clock, CHECK_S, 1000, 1000, 0)
    # Waves of 100 replacing 100: each wave is frozen, and the closed ones' cycles stay
    # frozen too, so the closes add up until a quarter of the connections have gone.
    for wave in (1, 2):
        ticks(freezer, clock, CHECK_S, 1000, 1000 + 100 * wave, 100 * wave)
    assert fake.calls == ["freeze", "freeze", "freeze"]
    ticks(freezer, clock, CHECK_S, 1000, 1250, 250)
    assert fake.calls == ["freeze", "freeze", "freeze", "unfreeze"]


def test_thaws_at_the_latest_after_thaw_after_s(gc_fake: tuple[FakeCollector, Clock, ConnectionFreezer]) -> None:
    fake, clock, freezer = gc_fake
    while not freezer.frozen:
        ticks(freezer, clock, CHECK_S, 1000, 1000, 0)
    frozen_at = clock.now
    while clock.now + CHECK_S < frozen_at + THAW_AFTER_S:
        ticks(freezer, clock, CHECK_S, 1000, 1000, 0)
    assert fake.calls == ["freeze"]
    ticks(freezer, clock, CHECK_S, 1000, 1000, 0)
    assert fake.calls == ["freeze", "unfreeze"]
    fake.full += 1
    ticks(freezer, clock, CHECK_S, 1000, 1000, 0)
    assert fake.calls == ["freeze", "unfreeze", "freeze"]


@pytest.fixture
def thawed_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # this test process's collector is the real one


@pytest.mark.usefixtures("thawed_after")
async def test_a_server_freezes_its_connections_and_thaws_after_they_close() -> None:
    server = Server(make_settings(), freeze_connections=True)
    await server.start()
    try:
        freezer = server.runtime.freezer
        assert freezer is not None
        assert gc.get_freeze_count() == 0
        clients = [await open_client(server) for _ in range(MIN_NEW + 10)]
        async with asyncio.timeout(5 * CHECK_S):
            while not freezer.frozen:
                await asyncio.sleep(CHECK_S / 5)
        assert MIN_NEW <= freezer.frozen <= MIN_NEW + 10
        async with httpx.AsyncClient(base_url=server.http) as http:
            assert (await http.get("/healthz")).json()["gc"]["frozen_objects"] > 0
        # The connections' objects are out of the collector's generations.
        assert all(gc.is_tracked(session) for session in server.runtime.connections)
        generations = {id(obj) for obj in gc.get_objects()}
        frozen = [session for session in server.runtime.connections if id(session) not in generations]
        assert len(frozen) >= freezer.frozen
        # The frozen connections still get their events.
        assert (await clients[0].recv()) and (await clients[-1].recv())
        for ws in clients:
            await ws.close()
        async with asyncio.timeout(5 * CHECK_S):
            while freezer.frozen:
                await asyncio.sleep(CHECK_S / 5)
        assert freezer.thaws == 1
        async with httpx.AsyncClient(base_url=server.http) as http:
            assert (await http.get("/healthz")).json()["gc"]["frozen_objects"] == 0
    finally:
        await server.stop()
