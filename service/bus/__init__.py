"""The pub/sub bus between the sequencer and the hub, and the replay window behind resume.

Backends are one module each, picked by `bus.kind` in the config and imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from service.events import BusMessage, Event, StreamKey

if TYPE_CHECKING:
    from service.config import BusSettings

# A handler gets messages in publish order, a burst at a time (often a list of one).
Handler = Callable[[list[BusMessage]], None]


class ReplayRefused(Exception):  # noqa: N818 - a result, not an error: the reason goes on the wire
    """The bus cannot replay what was asked; `reason` is the protocol's reason code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Bus(Protocol):
    def publish(self, message: BusMessage) -> None:
        """Deliver to every handler; never waits on a consumer."""

    def publish_many(self, messages: list[BusMessage]) -> None:
        """Deliver a burst, in order, with one call per handler; never waits on a consumer."""

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Call `handler` for every message from now on; returns the unsubscribe function."""

    def replay(self, key: StreamKey, epoch: str, after_seq: int) -> list[Event]:
        """The stream's events after `after_seq`, in order; raises ReplayRefused."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def create_bus(settings: BusSettings, replay_window: int) -> Bus:
    if settings.kind == "memory":
        from service.bus.memory import MemoryBus

        return MemoryBus(replay_window)
    raise ValueError(f"unknown bus kind {settings.kind!r}")  # pragma: no cover - config rejects it
