"""Make docs/screenshot.png: the ticker page in headless Chromium against a real server.

Runs the service in this process from a config file (port 0), lets the feed run for a while
so sparklines and the chart have history, selects a symbol, points at a candle and saves a
full-page screenshot.

    python tools/screenshot.py                      # config.yaml, 40 s, light theme
    python tools/screenshot.py --theme dark --out /tmp/dark.png --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path

import uvicorn
from playwright.async_api import async_playwright

from service.app import create_app
from service.cli import uvicorn_config
from service.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WATCHLIST = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA", "JPM", "XOM", "SIRI"]


async def shoot(config: Path, out: Path, seconds: float, theme: str, symbol: str) -> None:
    settings = load_settings(config)
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        known = set(app.state.runtime.hub.symbols)
        symbols = [s for s in WATCHLIST if s in known] or sorted(known)[:9]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme=theme)
            await page.goto(f"{base}/?symbols={','.join(symbols)}")
            await page.wait_for_function("() => window.__stockpush && window.__stockpush.state === 'live'")
            pick = symbol if symbol in symbols else symbols[0]
            await page.get_by_role("button", name=pick, exact=True).click()
            await page.get_by_role("button", name="1 min").click()
            print(f"letting the feed run for {seconds:g} s ...")
            await asyncio.sleep(seconds)
            await page.wait_for_function("() => window.__stockpush.chart.drawn > 0")
            box = await page.locator("#chart").bounding_box()
            if box:
                await page.mouse.move(box["x"] + box["width"] - 200, box["y"] + box["height"] * 0.4)
            await page.wait_for_timeout(300)  # one more paint with the crosshair
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out), full_page=True)
            await browser.close()
        print(f"wrote {out}")
    finally:
        server.should_exit = True
        await task
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--seconds", type=float, default=40.0, help="feed time before the shot")
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    parser.add_argument("--symbol", default="NVDA", help="the symbol shown in the detail view")
    args = parser.parse_args()
    asyncio.run(shoot(args.config, args.out, args.seconds, args.theme, args.symbol))


if __name__ == "__main__":
    main()
