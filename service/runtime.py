"""Everything one server process runs, wired from the settings: bus, hub, sequencer, feeds."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from service.bus import create_bus
from service.config import Settings
from service.hub import Hub
from service.sequencer import Sequencer
from service.supervisor import FeedSupervisor

if TYPE_CHECKING:
    from service.session import Session

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = create_bus(settings.bus, settings.stream.replay_window)
        self.hub = Hub(self.bus, batched=True)  # subscribes first, so it sees every stream start
        self.sequencer = Sequencer(self.bus.publish)
        self.supervisors: list[FeedSupervisor] = []
        for feed_config in settings.feeds:
            feed = feed_config.build()
            self.sequencer.register(feed.symbols())
            self.supervisors.append(FeedSupervisor(feed, self.sequencer))
        self.connections: set[Session] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.bus.start()
        for sup in self.supervisors:
            self._tasks.append(asyncio.create_task(sup.run(), name=f"sp:feed:{sup.feed.name}"))
        log.info(
            "Publishing %d symbols from %d feed(s) on the %s bus",
            len(self.hub.symbols),
            len(self.supervisors),
            self.settings.bus.kind,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.hub.close()
        await self.bus.close()
