"""The client against a real server whose connections drop: nothing lost, nothing repeated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest

from service.client import SnapshotMessage, Stream, connect
from tests.client_helpers import FAST, CutProxy, Ledger, wait_for
from tests.conftest import StartServer
from tests.helpers import TIMEOUT, Server

REPLAY_ACK = rb'"recovered":true,"replayed":[1-9]'


@pytest.fixture
async def proxies() -> AsyncIterator[list[CutProxy]]:
    """Proxies to close at teardown."""
    started: list[CutProxy] = []
    yield started
    for proxy in started:
        await proxy.close()


@contextlib.asynccontextmanager
async def consuming(stream: Stream, ledger: Ledger) -> AsyncIterator[asyncio.Task[None]]:
    """Feed every event of the stream into the ledger in the background."""

    async def consume() -> None:
        async for event in stream:
            ledger.add(event)

    task = asyncio.create_task(consume())
    try:
        yield task
    finally:
        if task.done():
            task.result()  # surface a failure of the consumer
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def assert_trades_match_the_server(ledger: Ledger, server: Server, epoch: str | None = None) -> int:
    """Every trade the consumer saw is the server's, in order, none missing in between; returns how many."""
    total = 0
    for (ch, sym, stream_epoch), seen in ledger.trades.items():
        if epoch is not None and stream_epoch != epoch:
            continue
        truth = [orjson.loads(t.wire) for t in server.runtime.bus.replay((ch, sym), stream_epoch, seen[0].seq - 1)]
        assert [(e.seq, e.price, e.size) for e in seen] == [
            (t["seq"], t["price"], t["size"]) for t in truth[: len(seen)]
        ]
        total += len(seen)
    return total


async def test_drops_even_during_a_replay_lose_and_repeat_nothing(
    start_server: StartServer, proxies: list[CutProxy]
) -> None:
    """Three drops, one in the middle of a replay: every stream's seq reaches the consumer once, in order."""
    server = await start_server(stream={"max_batch_bytes": 1024})  # a replay spans many frames
    proxy = await CutProxy(server.port).start()
    proxies.append(proxy)
    proxy.count(REPLAY_ACK)
    ledger = Ledger()
    aapl = server.runtime.hub.streams[("trades", "AAPL")]
    async with connect(proxy.url, backoff=FAST, proxy=None) as stream, consuming(stream, ledger):
        await stream.subscribe(["*"], channels=["trades", "quotes"])

        await wait_for(lambda: ledger.data >= 300, what="events before the first drop")
        assert proxy.cut() == 1
        await wait_for(lambda: stream.stats.reconnects == 1 and ledger.data >= 600, what="recovery from drop 1")

        # Keep the client out while events pile up, then cut its replay short.
        proxy.refuse = True
        proxy.cut()
        missed_until = aapl.seq + 200
        await wait_for(lambda: aapl.seq >= missed_until, what="events to pile up")
        replay_cut = proxy.cut_after(REPLAY_ACK, extra_bytes=3000)
        proxy.refuse = False
        async with asyncio.timeout(TIMEOUT):
            await replay_cut.wait()
        await wait_for(
            lambda: stream.stats.reconnects == 3 and ledger.last[("trades", "AAPL")][1] > missed_until,
            what="recovery from the drop during the replay",
        )
        assert proxy.seen >= 2  # the interrupted replay, and the one that finished it

        seen = ledger.data
        proxy.cut()
        await wait_for(lambda: stream.stats.reconnects == 4 and ledger.data >= seen + 300, what="recovery from drop 3")

    assert ledger.violations == []
    assert ledger.resets == [] and len(ledger.snapshots) == 2 * len(server.runtime.hub.symbols)
    assert assert_trades_match_the_server(ledger, server) > 500
    stats = stream.stats
    assert stats.replayed > 200 and stats.resets == 0 and stats.gaps == 0


async def test_server_restart_yields_reset_and_snapshot_then_continues(
    start_server: StartServer, proxies: list[CutProxy]
) -> None:
    """A new server process (new epochs) behind the same address: per stream a reset, a fresh snapshot, then events."""
    first = await start_server()
    proxy = await CutProxy(first.port).start()
    proxies.append(proxy)
    ledger = Ledger()
    keys = [(ch, sym) for ch in ("trades", "quotes") for sym in ("AAPL", "MSFT")]
    async with connect(proxy.url, backoff=FAST, proxy=None) as stream, consuming(stream, ledger):
        await stream.subscribe(["AAPL", "MSFT"], channels=["trades", "quotes"])
        await wait_for(lambda: ledger.data >= 100, what="events from the first server")
        old_epoch = first.runtime.hub.streams[("trades", "AAPL")].epoch
        await first.stop()  # clients get 1012
        second = await start_server()
        proxy.target_port = second.port
        new_epoch = second.runtime.hub.streams[("trades", "AAPL")].epoch

        def continued() -> bool:
            return all(ledger.last.get(key, ("", 0))[0] == new_epoch and ledger.last[key][1] > 0 for key in keys)

        await wait_for(lambda: len(ledger.resets) == 4 and continued(), what="every stream to continue after a reset")

    assert new_epoch != old_epoch
    assert ledger.violations == []
    assert sorted((r.ch, r.sym) for r in ledger.resets) == sorted(keys)
    assert {(r.reason, r.epoch) for r in ledger.resets} == {("EPOCH_CHANGED", new_epoch)}
    for reset in ledger.resets:
        after = [e for e in ledger.events[ledger.events.index(reset) + 1 :] if (e.ch, e.sym) == (reset.ch, reset.sym)]
        assert isinstance(after[0], SnapshotMessage) and after[0].epoch == new_epoch
        assert after[1].seq == after[0].seq + 1
    assert stream.stats.resets == 4 and stream.stats.reconnects >= 1
    assert assert_trades_match_the_server(ledger, first, old_epoch) > 0
    assert assert_trades_match_the_server(ledger, second, new_epoch) > 0


async def test_heartbeats_keep_an_idle_connection_alive(start_server: StartServer, proxies: list[CutProxy]) -> None:
    """With no data but heartbeats every heartbeat_ms, the watchdog never fires."""
    server = await start_server()
    proxy = await CutProxy(server.port).start()
    proxies.append(proxy)
    proxy.count(rb'"type":"heartbeat"')
    async with connect(proxy.url, proxy=None) as stream:
        await stream.subscribe(["AAPL"], channels=["status"])  # the random walk's status never changes
        await wait_for(lambda: proxy.seen >= 6, what="six heartbeats (twice the watchdog's limit)")
        assert stream.connected and stream.stats.reconnects == 0 and proxy.accepted == 1


async def test_stalled_consumer_still_gets_acks_and_loses_nothing(server: Server) -> None:
    """With the buffer full a subscribe still gets its ack; what did not fit is fetched again by resume."""
    ledger = Ledger()
    async with connect(server.url, buffer=50, proxy=None) as stream:
        await stream.subscribe(["*"], channels=["trades"])
        await wait_for(lambda: stream.stats.stalls == 1, what="the buffer to fill up and reading to stop")
        async with asyncio.timeout(TIMEOUT):
            await stream.subscribe(["*"], channels=["quotes"])
        assert stream.stats.deferred > 0
        async with asyncio.timeout(TIMEOUT):
            async for event in stream:
                ledger.add(event)
                if ledger.data >= 2000 and stream.stats.replayed > 0:
                    break
    assert ledger.violations == [] and ledger.resets == []
    assert len(ledger.snapshots) == 2 * len(server.runtime.hub.symbols)
    assert assert_trades_match_the_server(ledger, server) > 500
