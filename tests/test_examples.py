"""The examples run: the moving-average bot against a real server, the browser page in Chromium."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.browser import chromium as chromium_browser
from tests.client_helpers import CutProxy
from tests.conftest import StartServer
from tests.helpers import TIMEOUT, Server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TRADE_LINE = re.compile(r"^\[trade\] (\w+) ([\d.]+) x (\d+) #(\d+)$")


def server_trades(server: Server, sym: str) -> list[dict[str, Any]]:
    """Every trade of a symbol still in the server's replay window, oldest first."""
    stream = server.runtime.hub.streams[("trades", sym)]
    return [orjson.loads(e.wire) for e in server.runtime.bus.replay(("trades", sym), stream.epoch, 0)]


async def test_moving_average_bot_prints_every_trade_in_order(server: Server) -> None:
    """The bot prints each trade once, in order, with the right moving average over the last 20."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "moving_average.py"),
        "AAPL",
        "MSFT",
        env={**os.environ, "STOCKPUSH_URL": server.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(lines) < 60:
                line = await process.stdout.readline()
                assert line, (await process.stderr.read()).decode() if process.stderr else "no output"
                lines.append(line.decode().rstrip("\n"))
    finally:
        process.terminate()
        await process.wait()
    prices: dict[str, list[float]] = defaultdict(list)
    for line in lines:
        sym, price, label, average = line.split()
        prices[sym].append(float(price))
        recent = prices[sym][-20:]
        assert label == f"ma{len(recent)}"
        assert float(average) == pytest.approx(sum(recent) / len(recent), abs=1e-4)
    assert set(prices) == {"AAPL", "MSFT"} and max(len(p) for p in prices.values()) > 20
    for sym, seen in prices.items():
        truth = [t["price"] for t in server_trades(server, sym)]
        start = next(i for i in range(len(truth)) if truth[i : i + len(seen)] == seen)  # a contiguous run
        assert truth[start : start + len(seen)] == seen


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """Headless Chromium through Playwright; skipped without /usr/bin/chromium unless CI is set."""
    async with chromium_browser("the browser example runs in it") as browser:
        yield browser


async def _log(page: Any) -> list[str]:
    text: str = await page.inner_text("#log")
    return text.splitlines()


async def _wait_for_log(page: Any, predicate: Any, what: str) -> list[str]:
    lines: list[str] = []

    async def check() -> bool:
        nonlocal lines
        lines = await _log(page)
        return bool(predicate(lines))

    async with asyncio.timeout(TIMEOUT):
        while not await check():
            await asyncio.sleep(0.05)
    assert lines, what
    return lines


def _trades(lines: list[str]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        match = TRADE_LINE.match(line)
        if match:
            seqs[match[1]].append(int(match[4]))
    return seqs


async def test_browser_example_resumes_without_gap_and_reports_close_codes(
    start_server: StartServer, chromium: Any
) -> None:
    """The page shows trades, survives a dropped connection with no gap or repeat, and logs close 1012."""
    server = await start_server()
    proxy = await CutProxy(server.port).start()
    try:
        page = await chromium.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        url = proxy.url
        await page.goto(f"{(EXAMPLES / 'browser.html').as_uri()}?url={url}&symbols=AAPL,MSFT")
        await _wait_for_log(page, lambda lines: len(_trades(lines)["AAPL"]) >= 10, "trades")
        assert proxy.cut() == 1
        lines = await _wait_for_log(
            page,
            lambda lines: any("missed trades follow" in line for line in lines) and len(_trades(lines)["AAPL"]) >= 30,
            "a resume after the drop",
        )
        assert lines[0] == f"[open] connected to {url}"
        assert "[close] code 1006, reason (none)" in lines
        assert sum(line.startswith("[open]") for line in lines) == 2
        for sym, seqs in _trades(lines).items():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), sym  # once each, in order
        await server.stop()  # a restart: the server closes every connection with 1012
        await _wait_for_log(page, lambda lines: "[close] code 1012, reason (none)" in lines, "close 1012")
        assert errors == []
    finally:
        await proxy.close()


async def test_browser_example_reports_an_unreachable_server(chromium: Any) -> None:
    """Nothing listening: onerror fires, then onclose with 1006."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    page = await chromium.new_page()
    await page.goto(f"{(EXAMPLES / 'browser.html').as_uri()}?url=ws://127.0.0.1:{port}/v1/stream")
    lines = await _wait_for_log(page, lambda lines: any(line.startswith("[close]") for line in lines), "close")
    assert lines[:2] == ["[error] the connection failed; the close event follows", "[close] code 1006, reason (none)"]


def test_examples_stay_small() -> None:
    """The bot is the promised 20-odd lines of code, and uses only the public client."""
    code = [
        line
        for line in (EXAMPLES / "moving_average.py").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(code) <= 25
    assert "from service.client import" in "\n".join(code)
