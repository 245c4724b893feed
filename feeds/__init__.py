"""Price sources. Nothing here knows about the service: a feed emits ticks, that is all."""

from feeds.base import STATUSES, Feed, FeedConfig, NewDay, Quote, Status, SymbolSpec, Tick, Trade

__all__ = ["STATUSES", "Feed", "FeedConfig", "NewDay", "Quote", "Status", "SymbolSpec", "Tick", "Trade"]
