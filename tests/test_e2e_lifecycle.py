"""End to end: resets, shutdown, keepalive, the HTTP endpoints and the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import StartServer
from tests.helpers import TIMEOUT, SequenceChecker, Server, open_client, recv, send, subscribed, until

ROOT = Path(__file__).resolve().parent.parent


async def test_epoch_change_sends_reset_then_snapshot(server: Server) -> None:
    """A stream whose sequence restarts under a subscriber: reset, a seq-0 snapshot in the new epoch, then seq 1."""
    ws, ack = await subscribed(server, channels=["trades"], symbols=["AAPL"])
    old_epoch = ack["ok"][0]["epoch"]
    await until(ws, lambda m: m["type"] == "data")
    server.runtime.sequencer.reset(["AAPL"], "TEST")
    reset, _ = await until(ws, lambda m: m["type"] == "reset")
    assert reset["ch"] == "trades" and reset["sym"] == "AAPL"
    assert reset["epoch"] != old_epoch and reset["reason"] == "TEST"
    snapshot = await recv(ws)
    assert snapshot["type"] == "snapshot" and snapshot["epoch"] == reset["epoch"] and snapshot["seq"] == 0
    data, _ = await until(ws, lambda m: m["type"] == "data")
    assert data["events"][0]["seq"] == 1
    await ws.close()


async def test_failing_feed_is_restarted_with_new_epochs(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A feed that raises is logged and restarted; subscribers get reset + snapshot; /healthz shows it."""
    supervisor = server.runtime.supervisors[0]
    feed: Any = supervisor.feed
    ws, _ = await subscribed(server, symbols=["MSFT"])
    checker = SequenceChecker()
    original = feed.step
    calls = 0

    def failing_once(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ValueError("injected feed failure")
        original(*args)

    monkeypatch.setattr(feed, "step", failing_once)
    resets: list[dict[str, Any]] = []
    while len(resets) < 2 or checker.events < 50:
        message = await recv(ws)
        checker.feed(message)
        if message["type"] == "reset":
            resets.append(message)
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"{server.http}/healthz")).json()
            assert health["feeds"]["test"]["restarts"] == 1
            assert "injected feed failure" in health["feeds"]["test"]["last_error"]
    assert {r["ch"] for r in resets} == {"trades", "quotes"}
    assert {r["reason"] for r in resets} == {"FEED_RESTART"}
    assert checker.violations == []
    assert "Feed 'test' failed" in caplog.text
    await ws.close()


async def test_shutdown_closes_every_client_with_1012(start_server: StartServer) -> None:
    """On shutdown every client gets a close frame with 1012 (never 1006)."""
    server = await start_server()
    clients = [(await subscribed(server, symbols=["*"]))[0] for _ in range(3)]
    idle = await open_client(server)
    await server.stop()
    for ws in [*clients, idle]:
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012


async def test_quiet_client_survives_keepalive_pings(start_server: StartServer) -> None:
    """A client that sent one message then idles for several ping intervals stays connected."""
    server = await start_server(server={"ws_ping_interval_s": 0.1, "ws_ping_timeout_s": 0.3})
    ws = await open_client(server)
    await recv(ws)
    await send(ws, {"op": "subscriptions"})
    await asyncio.sleep(0.6)
    await send(ws, {"op": "ping", "id": "still-here"})
    pong, _ = await until(ws, lambda m: m["type"] == "pong")
    assert pong["id"] == "still-here"
    await ws.close()


async def test_http_symbols_health_and_page(server: Server) -> None:
    """GET /api/v1/symbols lists symbols with snapshots; /healthz is ok; / serves the page with a CSP."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        symbols = (await http.get("/api/v1/symbols")).json()
        health = await http.get("/healthz")
        page = await http.get("/")
    by_sym = {s["symbol"]: s for s in symbols["symbols"]}
    assert set(by_sym) == set(server.runtime.sequencer.symbols)
    assert by_sym["PENNY"]["price_decimals"] == 4 and by_sym["AAPL"]["tick_size"] == 0.01
    snap = by_sym["AAPL"]["snapshots"]["quotes"]
    assert snap["seq"] == server.runtime.hub.streams[("quotes", "AAPL")].seq or snap["seq"] > 0
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert page.status_code == 200 and "<table" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp


# --- the real command line, in a subprocess ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "server:\n  graceful_shutdown_s: 3\n"
        + extra
        + "feeds:\n  - name: sim\n    kind: random_walk\n    interval_ms: 20\n"
        "    symbols:\n      - {symbol: AAPL, price: 190}\n      - {symbol: MSFT, price: 410}\n"
    )
    return path


def _stockpush(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def test_serve_with_env_port_then_sigterm_closes_1012(tmp_path: Path) -> None:
    """`stockpush serve` honours STOCKPUSH_PORT; SIGTERM closes clients with 1012 and exits in time."""
    port = _free_port()
    proc = _stockpush("serve", "--config", str(_write_config(tmp_path)), env={"STOCKPUSH_PORT": str(port)})
    try:
        await _wait_listening(port, proc)
        async with connect(f"ws://127.0.0.1:{port}/v1/stream", proxy=None) as ws:
            hello = await recv(ws)
            assert hello["symbols"] == ["AAPL", "MSFT"]
            await send(ws, {"op": "subscribe", "symbols": ["*"]})
            await until(ws, lambda m: m["type"] == "data")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await recv(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        output, _ = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
        # uvicorn finishes its shutdown, then re-raises the signal so a supervisor sees it.
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "Finished server process" in output
        assert time.monotonic() - started < 3 + 2
        assert "websockets-sansio" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_flag_beats_env_for_host_and_port(tmp_path: Path) -> None:
    """--port overrides STOCKPUSH_PORT (flags > environment > config file)."""
    port = _free_port()
    proc = _stockpush(
        "serve", "--config", str(_write_config(tmp_path)), "--port", str(port), env={"STOCKPUSH_PORT": "1"}
    )
    try:
        await _wait_listening(port, proc)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT)


def test_bad_config_refuses_to_start_with_exit_2(tmp_path: Path) -> None:
    """A bad config: exit code 2, a message with file, field path and line, and no traceback."""
    path = _write_config(tmp_path, extra="stream:\n  heartbeat_ms: fast\n")
    proc = _stockpush("serve", "--config", str(path))
    output, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2
    assert str(path) in output
    assert "stream.heartbeat_ms (line 4)" in output
    assert "Traceback" not in output


def test_bad_env_port_is_a_clear_error(tmp_path: Path) -> None:
    """A malformed STOCKPUSH_PORT is refused with exit code 2 and says which variable."""
    proc = _stockpush("serve", "--config", str(_write_config(tmp_path)), env={"STOCKPUSH_PORT": "eighty"})
    output, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2 and "STOCKPUSH_PORT" in output and "Traceback" not in output
