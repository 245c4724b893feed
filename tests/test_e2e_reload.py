"""End to end: reloading the config adds, removes and retunes symbols without dropping clients."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import load_settings
from tests.helpers import Server, open_client, recv, send, subscribed, until

BEFORE = """
server: {admin_reload: %s}
stream: {heartbeat_ms: 300}
feeds:
  - name: a
    kind: random_walk
    interval_ms: 5
    symbols:
      - {symbol: AAPL, price: 190}
      - {symbol: MSFT, price: 410}
"""

AFTER = """
server: {admin_reload: true}
stream: {heartbeat_ms: 300}
feeds:
  - name: a
    kind: random_walk
    interval_ms: 5
    symbols:
      - {symbol: AAPL, price: 190, tick_size: "0.05"}
      - {symbol: NVDA, price: 120}
  - name: b
    kind: random_walk
    interval_ms: 5
    symbols:
      - {symbol: TSLA, price: 250}
"""


@pytest.fixture
async def reloadable(tmp_path: Path) -> AsyncIterator[tuple[Server, Path]]:
    """A server started from a config file it can re-read."""
    path = tmp_path / "config.yaml"
    path.write_text(BEFORE % "true")
    server = Server(load_settings(path), path)
    await server.start()
    yield server, path
    await server.stop()


async def _reload(server: Server) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http) as http:
        return await http.post("/api/v1/admin/reload")


async def test_reload_adds_removes_and_retunes_live(reloadable: tuple[Server, Path]) -> None:
    """After a reload: removed streams end with a notice, retuned ones reset, new symbols appear; the socket stays."""
    server, path = reloadable
    ws, ack = await subscribed(server, symbols=["AAPL", "MSFT"])
    old_epochs = {(o["ch"], o["sym"]): o["epoch"] for o in ack["ok"]}
    await until(ws, lambda m: m["type"] == "data")
    path.write_text(AFTER)
    response = await _reload(server)
    assert response.status_code == 200
    assert response.json() == {"status": "reloaded", "added": ["b"], "removed": [], "changed": ["a"]}

    removed: set[tuple[str, str]] = set()
    resets: dict[tuple[str, str], dict[str, Any]] = {}
    snapshots: dict[tuple[str, str], dict[str, Any]] = {}
    async with asyncio.timeout(10):
        while len(removed) < 2 or len(snapshots) < 2:
            message = await recv(ws)
            if message["type"] == "notice" and message["code"] == "STREAM_REMOVED":
                removed.add((message["ch"], message["sym"]))
            elif message["type"] == "reset":
                resets[(message["ch"], message["sym"])] = message
            elif message["type"] == "snapshot":
                snapshots[(message["ch"], message["sym"])] = message
            elif message["type"] == "data":
                assert all(e["sym"] == "AAPL" or (e["ch"], e["sym"]) not in removed for e in message["events"])
    assert removed == {("trades", "MSFT"), ("quotes", "MSFT")}
    assert {key: r["reason"] for key, r in resets.items()} == {
        ("trades", "AAPL"): "RECONFIGURED",
        ("quotes", "AAPL"): "RECONFIGURED",
    }
    assert all(resets[key]["epoch"] != old_epochs[key] for key in resets)
    assert snapshots[("quotes", "AAPL")]["data"]["price_decimals"] == 2
    await send(ws, {"op": "subscriptions", "id": "s"})
    current, _ = await until(ws, lambda m: m["type"] == "ack" and m.get("id") == "s")
    assert current["subscriptions"] == {"trades": ["AAPL"], "quotes": ["AAPL"]}

    fresh = await open_client(server)
    hello = await recv(fresh)
    assert hello["symbols"] == ["AAPL", "NVDA", "TSLA"]
    async with httpx.AsyncClient(base_url=server.http) as http:
        health = (await http.get("/healthz")).json()
    assert set(health["feeds"]) == {"a", "b"}
    assert all(feed["state"] == "running" for feed in health["feeds"].values())
    await fresh.close()
    await ws.close()


async def test_invalid_new_config_is_refused_and_the_old_one_keeps_running(reloadable: tuple[Server, Path]) -> None:
    """A reload of a bad file answers 422 naming the problem; symbols and clients stay as they were."""
    server, path = reloadable
    ws, _ = await subscribed(server, symbols=["AAPL"])
    path.write_text(AFTER.replace("price: 120", "price: -1"))
    response = await _reload(server)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "CONFIG_REFUSED"
    assert "feeds[0].symbols[1].price (line 10)" in error["message"]  # the NVDA line
    assert sorted(server.runtime.sequencer.symbols) == ["AAPL", "MSFT"]
    await until(ws, lambda m: m["type"] == "data")
    await ws.close()


async def test_http_reload_is_off_unless_configured(tmp_path: Path) -> None:
    """Without server.admin_reload the endpoint answers 403 and changes nothing."""
    path = tmp_path / "config.yaml"
    path.write_text(BEFORE % "false")
    server = Server(load_settings(path), path)
    await server.start()
    try:
        path.write_text(AFTER)
        response = await _reload(server)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "DISABLED"
        assert sorted(server.runtime.sequencer.symbols) == ["AAPL", "MSFT"]
    finally:
        await server.stop()


async def test_sighup_reloads(reloadable: tuple[Server, Path]) -> None:
    """SIGHUP re-reads the config file, as the HTTP endpoint does."""
    server, path = reloadable
    path.write_text(AFTER)
    os.kill(os.getpid(), signal.SIGHUP)
    async with asyncio.timeout(10):
        while sorted(server.runtime.sequencer.symbols) != ["AAPL", "NVDA", "TSLA"]:
            await asyncio.sleep(0.02)
    ws = await open_client(server)
    assert (await recv(ws))["symbols"] == ["AAPL", "NVDA", "TSLA"]
    await ws.close()
