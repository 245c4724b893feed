"""Everything one server process runs, wired from the settings: bus, hub, sequencer, feeds."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.bus import create_bus
from service.config import ConfigError, Settings, load_settings
from service.gcfreeze import CHECK_S, ConnectionFreezer
from service.hub import Hub
from service.pacer import Pacer
from service.pump import WriteScheduler
from service.sequencer import Sequencer
from service.supervisor import FeedSupervisor

if TYPE_CHECKING:
    from service.session import Session

log = logging.getLogger(__name__)


class ReloadError(Exception):
    """The new configuration was refused; the old one keeps running."""


class Runtime:
    def __init__(
        self, settings: Settings, config_path: Path | None = None, *, freeze_connections: bool = False
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.bus = create_bus(settings.bus, settings.stream.replay_window)
        # The hub subscribes first, so it sees every stream start.
        self.hub = Hub(self.bus, batched=True, chunk_bytes=max(1024, settings.stream.max_batch_bytes // 4))
        self.sequencer = Sequencer(self.bus.publish_many)
        self.supervisors: list[FeedSupervisor] = []
        for feed_config in settings.feeds:
            feed = feed_config.build()
            self.sequencer.register(feed.symbols())
            self.supervisors.append(FeedSupervisor(feed, self.sequencer))
        self.connections: set[Session] = set()
        self.opened = self.closed = 0  # connections ever served and ended (ConnectionFreezer)
        self.writes = WriteScheduler()  # runs the connections' pumps (service.pump)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # feed name -> its supervisor's task
        self._reload_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self.pacer = Pacer(settings.stream, self.connections, self.hub)
        self._pacer: asyncio.Task[None] | None = None
        # Owning the process's garbage collector is `stockpush serve`'s choice (service.gcfreeze).
        self.freezer = ConnectionFreezer() if freeze_connections else None
        self._freezing: asyncio.Task[None] | None = None

    def attach(self, session: Session) -> None:
        """A connection is served from now on: it gets events and heartbeats."""
        self.connections.add(session)
        self.opened += 1

    def detach(self, session: Session) -> None:
        """A connection is no longer served (closed, or gone before it was)."""
        if session in self.connections:
            self.connections.discard(session)
            self.closed += 1

    def _start_feed(self, sup: FeedSupervisor) -> None:
        self._tasks[sup.feed.name] = asyncio.create_task(sup.run(), name=f"sp:feed:{sup.feed.name}")

    async def _stop_feed(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.supervisors = [sup for sup in self.supervisors if sup.feed.name != name]

    async def reload(self) -> dict[str, list[str]]:
        """Apply the config file's feeds: add, remove and retune them without dropping clients.

        Only `feeds` are reloaded; other sections need a restart. An invalid file, or a feed
        that cannot be built, is refused and the running configuration stays as it was.
        """
        if self.config_path is None:
            raise ReloadError("this server was not started from a config file")
        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            raise ReloadError(str(exc)) from None
        async with self._reload_lock:
            old_feeds = {f.name: f for f in self.settings.feeds}
            new_feeds = {f.name: f for f in new.feeds}
            removed = [name for name in old_feeds if name not in new_feeds]
            added = [name for name in new_feeds if name not in old_feeds]
            changed = [name for name in new_feeds if name in old_feeds and new_feeds[name] != old_feeds[name]]
            try:
                built = {name: new_feeds[name].build() for name in added + changed}
            except Exception as exc:  # e.g. a replay file that cannot be read
                raise ReloadError(f"{self.config_path}: cannot build feed: {exc}") from None
            old_symbols = {name: set(cfg.symbol_names()) for name, cfg in old_feeds.items()}
            for name in removed + changed:
                await self._stop_feed(name)
            # Symbols of stopped feeds that no restarted or new feed publishes any more.
            republished = {sym for name in added + changed for sym in new_feeds[name].symbol_names()}
            gone = set().union(*(old_symbols[name] for name in removed + changed)) - republished
            self.sequencer.unregister(sorted(gone), "REMOVED")
            for name in added + changed:
                feed = built[name]
                specs = feed.symbols()
                known = [spec for spec in specs if spec.symbol in self.sequencer.symbols]
                self.sequencer.replace(known, "RECONFIGURED")
                self.sequencer.register(spec for spec in specs if spec.symbol not in self.sequencer.symbols)
                sup = FeedSupervisor(feed, self.sequencer)
                self.supervisors.append(sup)
                self._start_feed(sup)
            if new.model_dump(exclude={"feeds"}) != self.settings.model_dump(exclude={"feeds"}):
                log.warning("Reload applies feeds only; restart the server for the other changed settings")
            self.settings = self.settings.model_copy(update={"feeds": new.feeds})
        summary = {"added": added, "removed": removed, "changed": changed}
        log.info("Reloaded %s: %s", self.config_path, summary)
        return summary

    async def _heartbeats(self) -> None:
        """Wake the writers of connections that have sent nothing for heartbeat_ms.

        One ticker for all connections instead of a timer per connection and per wait.
        It ticks four times per interval, so a heartbeat goes out 1 to 1.25 intervals
        after the last frame.
        """
        heartbeat_s = self.settings.stream.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(heartbeat_s / 4)
            now = time.monotonic()
            for session in list(self.connections):
                session.heartbeat_if_idle(now, heartbeat_s)

    async def _freeze_connections(self, freezer: ConnectionFreezer) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            try:
                freezer.check(len(self.connections), self.opened, self.closed)
            except Exception:
                log.exception("Freezing the connections' objects failed")

    async def start(self) -> None:
        await self.bus.start()
        self._ticker = asyncio.create_task(self._heartbeats(), name="sp:heartbeats")
        self._pacer = asyncio.create_task(self.pacer.run(), name="sp:pacer")
        if self.freezer is not None:
            self._freezing = asyncio.create_task(self._freeze_connections(self.freezer), name="sp:gc-freeze")
        for sup in self.supervisors:
            self._start_feed(sup)
        log.info(
            "Publishing %d symbols from %d feed(s) on the %s bus",
            len(self.hub.symbols),
            len(self.supervisors),
            self.settings.bus.kind,
        )

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *(t for t in (self._ticker, self._pacer, self._freezing) if t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.hub.close()
        await self.bus.close()
