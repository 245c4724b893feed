"""create_app(settings): routes, security headers and the lifespan that runs the feeds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from service import __version__
from service.asyncapi import asyncapi_endpoint
from service.config import Settings
from service.endpoint import stream_endpoint
from service.events import BAR_CHANNELS
from service.runtime import ReloadError, Runtime

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STREAM_PATH = "/v1/stream"

# The page may load and connect to nothing but its own origin ('self' covers ws:/wss: to the
# same host in CSP Level 3), and may not be framed.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class StockpushApp(Starlette):
    """Starlette, with the stream's WebSocket connections handed straight to their endpoint.

    A stream connection lives for hours, and each layer that awaits the next keeps its
    coroutine frame as long: Starlette's middleware stack, router, route and session wrapper
    held ~4 KB of a connection's ~20 KB (tracemalloc). None of them acts on this route: the
    error middlewares and the security headers handle HTTP only, and the endpoint handles
    its own failures. The route stays in the routing table, which answers everything else.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function still (one frame), so that servers detect an ASGI 3 app.
        if scope["type"] == "websocket" and _route_path(scope) == STREAM_PATH:
            scope["app"] = self
            await stream_endpoint(WebSocket(scope, receive, send))
        else:
            await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a WebSocket connection, which lives long, keeps no frame here.
        if scope["type"] != "http":
            return self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        return self.app(scope, receive, send_with_headers)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def symbols(request: Request) -> Response:
    runtime = _runtime(request)
    hub = runtime.hub
    now_ms = hub.now_ms()
    feed_of = {spec.symbol: sup.feed.name for sup in runtime.supervisors for spec in sup.feed.symbols()}
    config_of = {feed.name: feed for feed in runtime.settings.feeds}
    specs = runtime.sequencer.symbols
    out = []
    for sym in hub.symbols:
        spec = specs.get(sym)
        feed = config_of.get(feed_of.get(sym, ""))
        out.append(
            {
                "symbol": sym,
                "name": spec.name if spec else "",
                "sector": spec.sector if spec else "",
                "feed": feed_of.get(sym),
                # market | replay | random_walk | synthetic: lets a page say "Replay" honestly
                "feed_kind": feed.kind if feed else None,
                "speed": getattr(feed, "speed", None),
                "tick_size": float(spec.tick_size) if spec else None,
                "price_decimals": spec.price_decimals if spec else None,
                "snapshots": {ch: stream.snapshot_body(now_ms) for (ch, s), stream in hub.streams.items() if s == sym},
            }
        )
    return ORJSONResponse({"server_ts": now_ms, "symbols": out})


def _bad_request(code: str, message: str, status: int = 400) -> Response:
    return ORJSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def bars(request: Request) -> Response:
    hub = _runtime(request).hub
    params = request.query_params
    symbol = params.get("symbol", "").upper()
    interval = params.get("interval", "1m")
    channel = f"bars.{interval}"
    if channel not in BAR_CHANNELS:
        return _bad_request("BAD_REQUEST", f"interval must be one of {', '.join(c[5:] for c in BAR_CHANNELS)}")
    if not symbol:
        return _bad_request("BAD_REQUEST", "symbol is required, e.g. ?symbol=AAPL")
    if (channel, symbol) not in hub.streams:
        return _bad_request("UNKNOWN_SYMBOL", f"no symbol {symbol!r}", 404)
    raw_limit = params.get("limit", "300")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= hub.bar_history:
        return _bad_request("BAD_REQUEST", f"limit must be an integer from 1 to {hub.bar_history}")
    history = hub.bar_history_of(channel, symbol, int(raw_limit))
    stream = hub.streams[(channel, symbol)]
    return ORJSONResponse(
        {
            "symbol": symbol,
            "interval": interval,
            "channel": channel,
            "epoch": stream.epoch,
            "seq": stream.seq,
            "price_decimals": hub.day[symbol]["price_decimals"],
            "bars": history,
        }
    )


async def admin_reload(request: Request) -> Response:
    runtime = _runtime(request)
    if not runtime.settings.server.admin_reload:
        return _bad_request("DISABLED", "reloading over HTTP is off; set server.admin_reload: true", 403)
    try:
        summary = await runtime.reload()
    except ReloadError as exc:
        return _bad_request("CONFIG_REFUSED", f"{exc}; the running configuration is unchanged", 422)
    return ORJSONResponse({"status": "reloaded", **summary})


async def healthz(request: Request) -> Response:
    runtime = _runtime(request)
    feeds = {sup.feed.name: sup.status() for sup in runtime.supervisors}
    healthy = all(f["state"] in ("running", "finished") for f in feeds.values())
    body = {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "connections": len(runtime.connections),
        "pace_ms": round(runtime.pacer.pace_s * 1000, 1),  # 0: every event goes out at once
        "feeds": feeds,
        # Full collections stall every client; frozen objects are what they skip (service.gcfreeze).
        "gc": {"full_collections": gc.get_stats()[-1]["collections"], "frozen_objects": gc.get_freeze_count()},
    }
    return ORJSONResponse(body, status_code=200 if healthy else 503)


def create_app(settings: Settings, config_path: Path | None = None, *, freeze_connections: bool = False) -> Starlette:
    """The app; `freeze_connections`: let it freeze its connections' objects (service.gcfreeze)."""
    runtime = Runtime(settings, config_path, freeze_connections=freeze_connections)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        reloads: set[asyncio.Task[None]] = set()

        async def reload_logged() -> None:
            try:
                await runtime.reload()
            except ReloadError as exc:
                log.error("Reload refused, the running configuration is unchanged: %s", exc)

        def on_sighup() -> None:
            task = asyncio.create_task(reload_logged(), name="sp:reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals here
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        try:
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            for task in reloads:
                task.cancel()  # a reload must not start feeds after the runtime stopped
            await asyncio.gather(*reloads, return_exceptions=True)
            await runtime.stop()

    routes = [
        WebSocketRoute(STREAM_PATH, stream_endpoint),
        Route("/api/v1/symbols", symbols),
        Route("/api/v1/bars", bars),
        Route("/api/v1/admin/reload", admin_reload, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/asyncapi.json", asyncapi_endpoint),
        Mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web"),
    ]
    app = StockpushApp(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime
    app.add_middleware(SecurityHeaders)
    return app
