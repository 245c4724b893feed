from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from service.config import Settings
from tests.helpers import Server, make_settings

StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
def writer() -> str:
    """How connections are written to: "direct" (stockpush serve) or "asgi" (plain ASGI sends).

    A module that overrides this fixture with params runs its tests under both.
    """
    return "direct"


@pytest.fixture
async def start_server(writer: str) -> AsyncIterator[StartServer]:
    """Start real uvicorn servers (settings from make_settings kwargs); stopped at teardown."""
    servers: list[Server] = []

    async def start(settings: Settings | None = None, **kwargs: Any) -> Server:
        server = Server(settings or make_settings(**kwargs), ws="websockets-sansio" if writer == "asgi" else None)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server()
