"""Debian's Chromium for the browser tests, launched the one way that works on this machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts, which a
# closed network refuses; its own browser download cannot work here, hence the system one.
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


def require_chromium(what: str) -> None:
    """Skip with a reason on a machine without Chromium; fail instead when CI is set."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is not installed (apt-get install chromium); {what}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: the browser tests must run in CI")
    pytest.skip(message)


@contextlib.asynccontextmanager
async def chromium(what: str) -> AsyncIterator[Browser]:
    require_chromium(what)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
