"""Runs one feed, restarting it with backoff when it fails; its streams get a new epoch."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from feeds.base import Feed
from service.sequencer import Sequencer

log = logging.getLogger(__name__)


class FeedSupervisor:
    def __init__(
        self,
        feed: Feed,
        sequencer: Sequencer,
        *,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 30.0,
    ) -> None:
        self.feed = feed
        self.sequencer = sequencer
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self.state = "starting"  # running | restarting | finished
        self.restarts = 0
        self.last_error: str | None = None

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}
        seed = getattr(self.feed, "seed", None)
        if seed is not None:
            status["seed"] = seed  # what reproduces this market
        return status

    async def run(self) -> None:
        backoff = self.initial_backoff_s
        symbols = [spec.symbol for spec in self.feed.symbols()]
        while True:
            self.state = "running"
            started = time.monotonic()
            try:
                await self.feed.run(self.sequencer)
            except Exception as exc:
                self.restarts += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.state = "restarting"
                if time.monotonic() - started > self.healthy_after_s:
                    backoff = self.initial_backoff_s
                log.exception("Feed %r failed; restarting it in %.1f s with new epochs", self.feed.name, backoff)
                # The events it would have produced are gone: subscribers must learn it now.
                self.sequencer.reset(symbols, "FEED_RESTART")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            else:
                self.state = "finished"
                log.info("Feed %r finished", self.feed.name)
                return
