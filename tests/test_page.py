"""The ticker page in a real browser: Debian's headless Chromium, driven by Playwright, against
real servers started in this process.

Everything runs on one module-scoped event loop, so one browser serves every test and the
in-process uvicorn servers share the loop with Playwright. (The `server`/`start_server`
fixtures of conftest.py live on per-test loops; `serve` below builds the same
`tests.helpers.Server` on this module's loop.) Tests wait on conditions in the page, never on
fixed sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from service.app import WEB_DIR
from service.cli import uvicorn_config
from tests.browser import chromium
from tests.helpers import Server, make_settings

WAIT_MS = 15_000
VIEWPORT = {"width": 1400, "height": 1000}

pytestmark = pytest.mark.asyncio(loop_scope="module")

Serve = Callable[..., Awaitable[Server]]


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page
    dialogs: list[str] = field(default_factory=list)  # alert()/confirm() the page tried to show


OpenPage = Callable[..., Awaitable[Tab]]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module; skipped without /usr/bin/chromium unless CI is set."""
    async with chromium("the page tests drive it") as browser:
        yield browser


def rebind(server: Server, port: int) -> Server:
    """Point a not yet started Server at a fixed port (to restart "the same" server)."""
    server.sock.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server.sock = sock
    server.port = port
    server.url = f"ws://127.0.0.1:{port}/v1/stream"
    server.http = f"http://127.0.0.1:{port}"
    return server


@pytest_asyncio.fixture(loop_scope="module")
async def serve() -> AsyncIterator[Serve]:
    """Start tests.helpers.Server instances (make_settings kwargs, optional fixed port) on this loop."""
    servers: list[Server] = []

    async def start(port: int | None = None, **kwargs: Any) -> Server:
        server = Server(make_settings(**kwargs))
        if port is not None:
            rebind(server, port)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser: Browser, serve: Serve) -> AsyncIterator[OpenPage]:
    """Open a URL in a fresh browser context; closed before the servers stop."""
    contexts = []

    async def open_(url: str, **context: Any) -> Tab:
        ctx = await browser.new_context(**{"viewport": VIEWPORT, **context})
        contexts.append(ctx)
        page = await ctx.new_page()
        tab = Tab(page)
        page.on("pageerror", lambda exc: tab.errors.append(str(exc)))

        async def on_dialog(dialog: Any) -> None:
            tab.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        await page.goto(url)
        return tab

    yield open_
    for ctx in contexts:
        await ctx.close()


async def until(page: Page, expression: str, arg: Any = None, timeout: int = WAIT_MS) -> Any:
    """Wait until a JS expression (a function of `arg`) is truthy in the page; return its value."""
    handle = await page.wait_for_function(expression, arg=arg, timeout=timeout)
    return await handle.json_value()


async def stop_feeds() -> None:
    """Stop the running server's feeds (one server runs at a time), so its state stops moving.

    There is no public switch; the runtime names each feed's task "sp:feed:<name>".
    """
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("sp:feed:")]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


LIVE = "() => window.__stockpush && window.__stockpush.state === 'live'"
ROWS = "() => [...document.querySelectorAll('#rows tr')].map(tr => tr.querySelector('.sym').textContent)"
ROW = """(sym) => {
  const tr = [...document.querySelectorAll('#rows tr')].find(t => t.querySelector('.sym').textContent === sym);
  if (!tr) return null;
  const text = (sel) => tr.querySelector(sel).textContent;
  return {price: text('.price'), chg: text('.chg'), pct: text('.pct'), bid: text('.bid'), ask: text('.ask'),
          vol: text('.vol'), status: text('.badge'), range: tr.querySelector('.range-track').getAttribute('aria-label'),
          spark: tr.querySelector('.spark canvas').getAttribute('aria-label')};
}"""
# Waits until the page's volume and last price of each symbol equal the server's.
SAME_AS_SERVER = """(expected) => Object.entries(expected).every(([sym, s]) => {
  const page = window.__stockpush.symbol(sym);
  return page && page.volume === s.volume && page.last === s.last;
})"""


def server_day(server: Server, symbols: list[str]) -> dict[str, dict[str, Any]]:
    day = server.runtime.hub.day
    return {sym: {"volume": day[sym]["volume"], "last": day[sym]["last"]} for sym in symbols}


def assert_clean(seq: dict[str, Any]) -> None:
    assert seq["gapCount"] == 0, seq["gaps"]
    assert seq["duplicates"] == 0
    assert seq["orphans"] == 0


# --- watchlist --------------------------------------------------------------------------


async def test_rows_appear_and_update(serve: Serve, open_page: OpenPage) -> None:
    """Rows show last, change, quote, volume, range, trend and status in the tick's decimals, and keep updating."""
    server = await serve(symbols=4, interval_ms=20)
    tab = await open_page(f"{server.http}/?symbols=AAPL,msft,PENNY")
    page = tab.page
    await until(page, LIVE)
    assert await page.evaluate(ROWS) == ["AAPL", "MSFT", "PENNY"]
    await until(page, "() => ['AAPL','MSFT','PENNY'].every(s => (window.__stockpush.symbol(s)?.spark ?? 0) > 0)")
    drawn = f"() => {{ const r = ({ROW})('AAPL'); return r.spark.includes('trend') && r.status && r; }}"
    aapl = await until(page, drawn)
    penny = await page.evaluate(ROW, "PENNY")
    assert aapl["price"].replace(",", "").count(".") == 1 and len(aapl["price"].split(".")[1]) == 2
    assert len(penny["price"].split(".")[1]) == 4  # tick 0.0001
    assert aapl["chg"][0] in "▲▼0" and aapl["pct"].endswith("%")
    assert " \u00d7 " in aapl["bid"] and " \u00d7 " in aapl["ask"]  # price x size
    assert aapl["status"] == "open"
    assert aapl["range"].startswith("Day range ")
    assert aapl["spark"].startswith("AAPL session trend")
    assert await page.text_content("#conn-text") == "Live"
    assert await page.text_content("#data-label") == "Simulated data"

    volume = (await page.evaluate("() => window.__stockpush.symbol('AAPL').volume")) or 0
    first = await page.evaluate(ROW, "AAPL")
    await until(page, f"(v) => window.__stockpush.symbol('AAPL').volume > v && ({ROW})('AAPL').vol !== ''", volume)
    await until(page, f"(old) => ({ROW})('AAPL').price !== old.price || ({ROW})('AAPL').bid !== old.bid", first)

    # What the page folded from snapshot + events equals the server's own day statistics.
    await stop_feeds()
    await until(page, SAME_AS_SERVER, server_day(server, ["AAPL", "MSFT", "PENNY"]))
    assert_clean(await page.evaluate("() => window.__stockpush.seq"))
    assert await page.evaluate("() => window.__stockpush.cspViolations") == []
    assert tab.errors == []


FLASH_OBSERVER = """() => {
  window.__flashDom = [];
  const watch = (cell) => new MutationObserver(() => {
    const dir = cell.classList.contains('flash-up') ? 'up' : cell.classList.contains('flash-down') ? 'down' : null;
    if (dir && cell.dataset.seen !== dir + cell.textContent) {
      cell.dataset.seen = dir + cell.textContent;
      window.__flashDom.push({dir, sym: cell.parentElement.querySelector('.sym').textContent});
    }
  }).observe(cell, {attributes: true, attributeFilter: ['class']});
  document.querySelectorAll('#rows td.last').forEach(watch);
}"""


async def test_flashes_follow_tick_direction(serve: Serve, open_page: OpenPage) -> None:
    """The price cell flashes up on a higher price and down on a lower one, at most 3 times a second."""
    server = await serve(symbols=4, interval_ms=30)
    tab = await open_page(f"{server.http}/?symbols=AAPL,MSFT,NVDA,TSLA")
    page = tab.page
    await until(page, LIVE)
    await until(page, "() => document.querySelectorAll('#rows td.last').length === 4")
    await page.evaluate(FLASH_OBSERVER)
    flashes = await until(page, "() => window.__stockpush.flashes.length >= 16 && window.__stockpush.flashes")
    for flash in flashes:
        assert flash["dir"] == ("up" if flash["to"] > flash["from"] else "down"), flash
    assert {f["dir"] for f in flashes} == {"up", "down"}
    for sym in {f["sym"] for f in flashes}:
        times = [f["t"] for f in flashes if f["sym"] == sym]
        assert all(b - a >= 333 for a, b in itertools.pairwise(times)), (sym, times)
    seen = await page.evaluate("() => window.__flashDom")
    assert seen and {s["dir"] for s in seen} <= {"up", "down"}
    assert tab.errors == []


async def test_reduced_motion_shows_tick_glyph_without_flashing(serve: Serve, open_page: OpenPage) -> None:
    """Under prefers-reduced-motion the price cell never flashes; a static ▲/▼ shows the tick."""
    server = await serve(symbols=4, interval_ms=20)
    tab = await open_page(f"{server.http}/?symbols=AAPL,MSFT", reduced_motion="reduce")
    page = tab.page
    await until(page, LIVE)
    await until(page, "() => document.querySelectorAll('#rows td.last').length === 2")
    await page.evaluate(FLASH_OBSERVER)
    await until(page, "() => [...document.querySelectorAll('#rows .tick')].every(t => '▲▼'.includes(t.textContent))")
    volume = await page.evaluate("() => window.__stockpush.symbol('AAPL').volume")
    await until(page, "(v) => window.__stockpush.symbol('AAPL').volume > v + 2000", volume)
    assert await page.evaluate("() => window.__stockpush.flashes.length") == 0
    assert await page.evaluate("() => window.__flashDom") == []
    assert tab.errors == []


async def test_add_remove_reorder_persist_across_reload(serve: Serve, open_page: OpenPage) -> None:
    """The combobox adds by keyboard, buttons remove and reorder; the list survives reloads (URL, localStorage)."""
    server = await serve(symbols=8, interval_ms=50)
    tab = await open_page(f"{server.http}/?symbols=AAPL,MSFT")
    page = tab.page
    await until(page, LIVE)
    assert await page.evaluate(ROWS) == ["AAPL", "MSFT"]
    combo = page.locator("#add-input")

    await combo.focus()
    await page.keyboard.type("nv")
    assert await combo.get_attribute("aria-expanded") == "true"
    active = await combo.get_attribute("aria-activedescendant")
    assert await page.text_content(f"#{active} .opt-sym") == "NVDA"
    await page.keyboard.press("Enter")
    await until(page, f"() => ({ROWS})().join() === 'AAPL,MSFT,NVDA'")
    assert await combo.get_attribute("aria-expanded") == "false"

    await page.keyboard.press("ArrowDown")  # opens the full list
    await page.keyboard.press("ArrowDown")  # first option: AMZN
    await page.keyboard.press("ArrowDown")  # second: GOOGL
    active = await combo.get_attribute("aria-activedescendant")
    assert await page.text_content(f"#{active} .opt-sym") == "GOOGL"
    await page.keyboard.press("Enter")
    await until(page, f"() => ({ROWS})().join() === 'AAPL,MSFT,NVDA,GOOGL'")

    await page.get_by_role("button", name="Remove MSFT").press("Enter")
    await until(page, f"() => ({ROWS})().join() === 'AAPL,NVDA,GOOGL'")
    await page.get_by_role("button", name="Move GOOGL up").click()
    await until(page, f"() => ({ROWS})().join() === 'AAPL,GOOGL,NVDA'")
    assert await page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Move GOOGL up"
    assert "symbols=AAPL%2CGOOGL%2CNVDA" in page.url

    # The server follows: MSFT unsubscribed, GOOGL subscribed.
    (session,) = server.runtime.connections
    assert ("trades", "MSFT") not in session.subscriptions
    assert ("quotes", "GOOGL") in session.subscriptions

    await page.reload()
    await until(page, LIVE)
    assert await page.evaluate(ROWS) == ["AAPL", "GOOGL", "NVDA"]
    await page.goto(f"{server.http}/")
    await until(page, LIVE)
    assert await page.evaluate(ROWS) == ["AAPL", "GOOGL", "NVDA"]
    assert tab.errors == []


# --- detail chart ------------------------------------------------------------------------

CANDLE_PIXELS = """() => {
  const canvas = document.getElementById('chart');
  const ctx = canvas.getContext('2d');
  const {data} = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const style = getComputedStyle(document.documentElement);
  const rgb = (name) => { const h = style.getPropertyValue(name).trim().slice(1);
    return [0, 2, 4].map(i => parseInt(h.slice(i, i + 2), 16)); };
  const colours = [rgb('--candle-up'), rgb('--candle-down')];
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const near = (c) => Math.abs(c[0] - data[i]) + Math.abs(c[1] - data[i + 1]) + Math.abs(c[2] - data[i + 2]) < 12;
    if (data[i + 3] === 255 && colours.some(near)) n++;
  }
  return n;
}"""


async def test_chart_draws_history_and_grows_live(serve: Serve, open_page: OpenPage) -> None:
    """The chart loads candles from /api/v1/bars, grows live, reads OHLCV at the crosshair, switches to 1 min."""
    server = await serve(symbols=2, interval_ms=20)
    history = server.runtime.hub.bars[("bars.1s", "AAPL")]
    async with asyncio.timeout(15):
        while len(history) < 3:
            await asyncio.sleep(0.05)
    tab = await open_page(f"{server.http}/?symbols=AAPL,MSFT")
    page = tab.page
    await until(page, LIVE)
    chart = await until(
        page, "() => { const c = window.__stockpush.chart; return c.historyBars >= 3 && c.drawn >= 3 && c; }"
    )
    assert chart["sym"] == "AAPL" and chart["interval"] == "1s"
    assert await page.evaluate(CANDLE_PIXELS) > 50
    await until(
        page,
        "(c) => { const n = window.__stockpush.chart; return n.lastStart > c.lastStart && n.drawn > c.drawn; }",
        chart,
    )
    assert await page.evaluate("() => window.__stockpush.chart.liveBars") > 0
    # The forming candle follows every trade, not only the server's (rate-limited) bar updates.
    await stop_feeds()
    await until(page, "() => window.__stockpush.chart.lastClose === window.__stockpush.symbol('AAPL').last")

    box = await page.locator("#chart").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] - 80, box["y"] + 100)
    readout = await page.text_content("#readout")
    assert readout is not None and all(f" {k} " in f" {readout} " for k in ("O", "H", "L", "C", "V"))
    await page.mouse.move(0, 0)
    await page.locator("#chart").focus()
    await page.keyboard.press("End")
    newest = await page.text_content("#readout")
    await page.keyboard.press("ArrowLeft")
    assert await page.text_content("#readout") != newest

    await page.get_by_role("button", name="1 min").click()
    await until(page, "() => window.__stockpush.chart.interval === '1m' && window.__stockpush.chart.drawn >= 1")
    (session,) = server.runtime.connections
    async with asyncio.timeout(5):
        while ("bars.1s", "AAPL") in session.subscriptions:
            await asyncio.sleep(0.02)
    assert ("bars.1m", "AAPL") in session.subscriptions
    assert tab.errors == []


# --- connection truth ----------------------------------------------------------------------


async def test_server_side_drop_shows_reconnecting_then_resumes_without_gap(serve: Serve, open_page: OpenPage) -> None:
    """A connection the server drops shows reconnecting, then resumes each stream from its seq: no gap, no duplicate."""
    server = await serve(symbols=4, interval_ms=10)
    symbols = ["AAPL", "MSFT", "NVDA", "TSLA"]
    tab = await open_page(f"{server.http}/?symbols={','.join(symbols)}")
    page = tab.page
    await until(page, LIVE)
    await until(page, "() => window.__stockpush.seq.events > 200")

    for _ in range(2):
        before = await page.evaluate("() => window.__stockpush.stats.states.length")
        for session in list(server.runtime.connections):
            session.fail("test: the server drops this connection")
        await until(
            page,
            """(n) => { const s = window.__stockpush.stats.states.slice(n).map(x => x.state);
                        const r = s.indexOf('reconnecting'); return r >= 0 && s.indexOf('live', r) > r; }""",
            before,
        )
        await until(page, "() => document.getElementById('conn-text').textContent === 'Live'")

    stats = await page.evaluate("() => window.__stockpush.stats")
    assert stats["connects"] == 3
    # 1011 after `error INTERNAL`; 1006 if the close frame lost the race with the socket's end.
    assert len(stats["closes"]) == 2 and {c["code"] for c in stats["closes"]} <= {1011, 1006}, stats
    assert stats["notRecovered"] == 0
    assert stats["recovered"] >= 2 * (3 * len(symbols) + 1)  # trades, quotes, status each + the chart's bars
    assert stats["replayed"] > 0
    await stop_feeds()
    await until(page, SAME_AS_SERVER, server_day(server, symbols))
    assert_clean(await page.evaluate("() => window.__stockpush.seq"))
    assert tab.errors == []


async def test_reset_and_server_restart_recover_by_themselves(serve: Serve, open_page: OpenPage) -> None:
    """A live reset and a restarted server (new epochs) lead to fresh snapshots; the page recovers with no gap."""
    server = await serve(symbols=2, interval_ms=20)
    tab = await open_page(f"{server.http}/?symbols=AAPL,MSFT")
    page = tab.page
    await until(page, LIVE)
    await until(page, "() => window.__stockpush.chart.historyBars !== undefined && window.__stockpush.seq.events > 50")

    server.runtime.sequencer.reset(["AAPL"], "TEST")
    epoch = server.runtime.hub.streams[("trades", "AAPL")].epoch
    await until(page, "(e) => window.__stockpush.streams['trades AAPL'].epoch === e", epoch)
    await until(page, "(e) => window.__stockpush.chart.epoch === e", epoch)  # history reloaded
    assert await page.evaluate("() => window.__stockpush.stats.resets") >= 4  # trades, quotes, status, bars.1s
    events = await page.evaluate("() => window.__stockpush.seq.events")
    await until(page, "(n) => window.__stockpush.seq.events > n + 20", events)

    port = server.port
    await server.stop()
    await until(page, "() => window.__stockpush.state === 'reconnecting'")
    restarted = await serve(port=port, symbols=2, interval_ms=20)
    await until(page, LIVE)
    new_epoch = restarted.runtime.hub.streams[("trades", "MSFT")].epoch
    await until(page, "(e) => window.__stockpush.streams['trades MSFT'].epoch === e", new_epoch)
    await until(page, "(e) => window.__stockpush.chart.epoch === e", new_epoch)
    stats = await page.evaluate("() => window.__stockpush.stats")
    assert stats["notRecovered"] >= 7  # every stream: trades, quotes, status x2 and the chart's bars
    assert set(stats["reasons"]) == {"EPOCH_CHANGED"}
    await stop_feeds()
    await until(page, SAME_AS_SERVER, server_day(restarted, ["AAPL", "MSFT"]))
    assert_clean(await page.evaluate("() => window.__stockpush.seq"))
    assert tab.errors == []


# --- safety --------------------------------------------------------------------------------

EVIL = "<img src=x onerror=alert(1)>"
EVIL_OTHER = "<svg onload=alert(2)>"
EVIL_NAME = '<img src=x onerror=alert("name")>'


class FakeService:
    """A scripted stand-in for the service: the page's files, hostile strings in every message."""

    def __init__(self) -> None:
        self.close_with = asyncio.Event()
        self.connections = 0
        routes = [
            WebSocketRoute("/v1/stream", self.stream),
            Route("/api/v1/symbols", self.symbols),
            Route("/api/v1/bars", self.bars),
            Mount("/", StaticFiles(directory=WEB_DIR, html=True)),
        ]
        self.app = Starlette(routes=routes)

    async def symbols(self, request: Request) -> JSONResponse:
        names = [EVIL, EVIL_OTHER, "AAPL"]
        return JSONResponse({"symbols": [{"symbol": s, "name": EVIL_NAME, "price_decimals": 2} for s in names]})

    async def bars(self, request: Request) -> JSONResponse:
        bar = {"start_ts": 1_700_000_000_000, "end_ts": 1_700_000_001_000, "open": 1.0, "high": 2.0, "low": 0.5,
               "close": 1.5, "volume": 10, "trades": 2, "final": True}  # fmt: skip
        return JSONResponse({"symbol": request.query_params["symbol"], "epoch": "e1", "seq": 1, "price_decimals": 2,
                             "bars": [bar]})  # fmt: skip

    async def stream(self, ws: WebSocket) -> None:
        self.connections += 1
        await ws.accept()
        symbols = [EVIL, EVIL_OTHER, "AAPL"]
        hello = {"type": "hello", "protocol": "stockpush/1", "server_ts": 0, "heartbeat_ms": 60_000,
                 "limits": {"max_subscriptions": 100}, "channels": {}, "symbols": symbols}  # fmt: skip
        await ws.send_json(hello)
        reader = asyncio.create_task(self.answer(ws))
        await self.close_with.wait()
        reader.cancel()
        await ws.close(4001, "test: fatal")

    async def answer(self, ws: WebSocket) -> None:
        try:
            while True:
                message = await ws.receive_json()
                if message.get("op") != "subscribe":
                    continue
                ok = [{"ch": ch, "sym": sym, "epoch": "e1", "seq": 1}
                      for ch in message["channels"] for sym in message["symbols"]]  # fmt: skip
                await ws.send_json({"type": "ack", "id": message["id"], "op": "subscribe", "ok": ok, "failed": []})
                data = {"price": 1.5, "size": 100, "bid": 1.49, "bid_size": 100, "ask": 1.51, "ask_size": 200,
                        "status": "open", "reason": EVIL, "prev_close": 1.0, "open": 1.0, "high": 2.0, "low": 1.0,
                        "last": 1.5, "volume": 100, "price_decimals": 2}  # fmt: skip
                for entry in ok:
                    await ws.send_json({"type": "snapshot", **entry, "ts": 1_700_000_000_000, "data": data})
                if EVIL in message["symbols"] and "trades" in message["channels"]:
                    events = [
                        {"ch": "trades", "sym": EVIL, "seq": 2, "ts": 1_700_000_000_500, "price": 1.6, "size": 5},
                        {"ch": "status", "sym": EVIL, "seq": 2, "ts": 1_700_000_000_500, "status": "halted",
                         "reason": EVIL, "prev_close": 1.0},
                    ]  # fmt: skip
                    await ws.send_json({"type": "data", "events": events})
                    await ws.send_json({"type": "notice", "code": "TEST", "message": EVIL})
                    await ws.send_json({"type": "error", "code": "BAD_REQUEST", "message": EVIL_OTHER, "fatal": False})
        except WebSocketDisconnect:
            pass


class FakeServer(Server):
    """tests.helpers.Server serving the fake service instead of the real app."""

    def __init__(self, fake: FakeService) -> None:
        super().__init__(make_settings())
        self.app = fake.app
        self.uvicorn = uvicorn.Server(uvicorn_config(fake.app, self.settings, log_level="warning"))


async def test_hostile_strings_stay_text_and_fatal_close_goes_offline(open_page: OpenPage) -> None:
    """Hostile symbols, names and messages render as text; a 40xx close is final; quiet open rows go stale."""
    fake = FakeService()
    server = FakeServer(fake)
    await server.start()
    try:
        url = f"{server.http}/?stale_ms=1000&symbols={EVIL.replace('<', '%3C').replace('>', '%3E')},AAPL"
        tab = await open_page(url)
        page = tab.page
        await until(page, LIVE)
        await until(page, "(s) => window.__stockpush.symbol(s)?.status === 'halted'", EVIL)
        await until(page, "() => document.getElementById('notices').children.length >= 2")
        assert await page.evaluate(ROWS) == [EVIL, "AAPL"]
        await until(page, "(n) => document.querySelector('#rows .name').textContent === n", EVIL_NAME)
        evil_row = await page.evaluate(ROW, EVIL)
        assert evil_row["status"] == "halted" and evil_row["price"] == "1.60"
        assert await page.text_content("#detail-symbol") == EVIL
        notices = await page.locator("#notices span").all_text_contents()
        assert f"Server: {EVIL}" in notices and f"Server: {EVIL_OTHER}" in notices

        await page.locator("#add-input").fill("<")
        assert await page.locator("#add-list .opt-sym").all_text_contents() == [EVIL_OTHER]
        assert await page.locator("#add-list .opt-name").all_text_contents() == [EVIL_NAME]
        await page.evaluate(
            "(s) => { window.__stockpush.inject('not json {'); window.__stockpush.inject("
            "{type: 'data', events: [{ch: 'trades', sym: s, seq: 1, ts: 0, price: 1, size: 1}]}); }",
            EVIL_OTHER,
        )

        # The open, quiet AAPL row goes stale; the halted one keeps its own badge.
        await until(page, f"() => ({ROW})('AAPL').status === 'stale'")
        assert (await page.evaluate(ROW, EVIL))["status"] == "halted"

        assert await page.evaluate("() => document.querySelectorAll('img, svg, iframe, object').length") == 0
        assert tab.dialogs == []
        assert await page.evaluate("() => window.__stockpush.stats.bad") >= 1

        fake.close_with.set()
        await until(page, "() => window.__stockpush.state === 'offline'")
        assert await page.is_visible("#reconnect")
        assert (await page.text_content("#conn-text") or "").startswith("Offline")
        assert fake.connections == 1
        assert tab.errors == []
    finally:
        await server.stop()


# --- accessibility ------------------------------------------------------------------------

CONTRAST = """() => {
  const parse = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  // A sample of every coloured text the page uses, in the page's own classes and containers.
  let sample = document.getElementById('contrast-sample');
  if (!sample) {
    sample = document.createElement('div');
    sample.id = 'contrast-sample';
    const table = document.createElement('table');
    table.className = 'quotes';
    const body = table.createTBody();
    for (const rowClass of ['', 'selected', 'stale']) {
      const tr = body.insertRow();
      tr.className = rowClass;
      for (const cls of ['num up', 'num down', 'num flat', 'last flash-up', 'last flash-down', 'vol']) {
        const td = tr.insertCell(); td.className = cls; td.textContent = '+1.23';
      }
      for (const cls of ['open', 'pre', 'post', 'closed', 'halted', 'stale']) {
        const td = tr.insertCell(); const b = document.createElement('span');
        b.className = 'badge badge-' + cls; b.textContent = cls; td.append(b);
      }
    }
    sample.append(table);
    document.querySelector('main').append(sample);
  }
  const targets = [...sample.querySelectorAll('td, .badge')].filter(e => e.textContent)
    .concat([...document.querySelectorAll('#rows .name, #rows .sym, #rows .price, #rows .chg, .quotes thead th, .pill, '
      + '#data-label, .clock, #pause, #theme, .readout, .day-stats dt, .session, #detail-change, .tape td, .foot p')]);
  return targets.filter(e => e.textContent.trim()).map(e => ({
    what: (e.id || e.className || e.tagName) + ' ' + (e.parentElement?.className || ''),
    ratio: Math.round(ratio(parse(getComputedStyle(e).color).slice(0, 3), background(e)) * 100) / 100,
  }));
}"""


async def test_contrast_focus_and_theme_toggle(serve: Serve, open_page: OpenPage) -> None:
    """All text keeps 4.5:1 contrast in light and dark themes; keyboard focus is visible; the theme toggle persists."""
    server = await serve(symbols=2, interval_ms=30)
    tab = await open_page(f"{server.http}/?symbols=AAPL,MSFT", color_scheme="light")
    page = tab.page
    await until(page, LIVE)
    await until(page, "() => document.querySelector('.tape td') && document.querySelector('#rows .badge').textContent")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        ratios = await page.evaluate(CONTRAST)
        assert len(ratios) > 40
        low = [r for r in ratios if r["ratio"] < 4.5]
        assert low == [], (scheme, low)

    await page.locator("body").click(position={"x": 5, "y": 5})
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await page.evaluate("() => document.activeElement.id") == "pause":
            break
    outline = await page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert outline[0] == "solid" and float(outline[1].removesuffix("px")) >= 2

    theme = page.locator("#theme")
    await page.emulate_media(color_scheme="light")
    await theme.click()
    await theme.click()
    assert await theme.text_content() == "Theme: dark"
    assert await page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    ratios = await page.evaluate(CONTRAST)
    assert [r for r in ratios if r["ratio"] < 4.5] == []
    await page.reload()
    await until(page, LIVE)
    assert await page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    assert tab.errors == []


# --- load ---------------------------------------------------------------------------------

FRAME_TIMES = """(ms) => new Promise((resolve) => {
  const deltas = [];
  const hook = window.__stockpush;
  const events = hook.seq.events;
  const paints = hook.paintTimes.length;
  const long = [];
  const observer = new PerformanceObserver((list) => long.push(...list.getEntries().map(e => e.duration)));
  try { observer.observe({type: 'longtask'}); } catch {}
  let last = null;
  const started = performance.now();
  const tick = (t) => {
    if (last !== null) deltas.push(t - last);
    last = t;
    if (t - started < ms) requestAnimationFrame(tick);
    else {
      observer.disconnect();
      resolve({deltas, paint: hook.paintTimes.slice(paints), events: hook.seq.events - events,
               seconds: (performance.now() - started) / 1000, longTasks: long});
    }
  };
  requestAnimationFrame(tick);
})"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def test_frame_times_with_50_symbols_at_10_updates_per_second(serve: Serve, open_page: OpenPage) -> None:
    """50 symbols, each quoting ~10 times a second: frame times are measured in Chromium and reported."""
    server = await serve(symbols=50, interval_ms=100, feed={"activity": 1.0})
    symbols = sorted(server.runtime.hub.symbols)[:50]
    tab = await open_page(f"{server.http}/?symbols={','.join(symbols)}", viewport={"width": 1400, "height": 3200})
    page = tab.page
    await until(page, LIVE)
    await until(page, "() => [...document.querySelectorAll('#rows .price')].every(p => p.textContent !== '\u2013')")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    before = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    result = await page.evaluate(FRAME_TIMES, 4_000)
    after = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    busy = {
        k: after[k] - before[k] for k in ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")
    }
    deltas, paint = result["deltas"], result["paint"]
    rate = result["events"] / result["seconds"]
    visible = await page.evaluate(
        "() => { const s = document.getElementById('watchlist-scroll').getBoundingClientRect();"
        " return [...document.querySelectorAll('#rows tr')]"
        ".filter(r => r.getBoundingClientRect().top < s.bottom).length; }"
    )
    print(
        f"\nframe times, 50 symbols ({visible} rows on screen), {rate:.0f} events/s "
        f"({rate / 50:.1f} per symbol per second) over {result['seconds']:.1f} s:"
        f"\n  rAF interval   p50 {percentile(deltas, 50):.1f} ms  p95 {percentile(deltas, 95):.1f} ms"
        f"  max {max(deltas):.1f} ms  ({len(deltas)} frames)"
        f"\n  paint per frame p50 {percentile(paint, 50):.2f} ms  p95 {percentile(paint, 95):.2f} ms"
        f"  max {max(paint):.2f} ms  ({len(paint)} paints)"
        f"\n  long tasks (>50 ms): {len(result['longTasks'])}"
        f"\n  renderer main thread busy {busy['TaskDuration'] / result['seconds']:.0%} (script"
        f" {busy['ScriptDuration'] / result['seconds']:.0%}, layout {busy['LayoutDuration'] / result['seconds']:.0%},"
        f" style {busy['RecalcStyleDuration'] / result['seconds']:.0%})"
    )
    assert deltas and paint
    assert_clean(await page.evaluate("() => window.__stockpush.seq"))
    assert tab.errors == []
