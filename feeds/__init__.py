"""Price sources. Nothing here knows about the service: a feed emits ticks, that is all."""

from feeds.base import Feed, FeedConfig, Quote, SymbolSpec, Tick, Trade

__all__ = ["Feed", "FeedConfig", "Quote", "SymbolSpec", "Tick", "Trade"]
