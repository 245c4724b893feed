"""The `stockpush` command: serve, check-config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from service.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings

EXIT_CONFIG = 2
# websockets-sansio, named explicitly: since uvicorn 0.52.1 it applies transport
# backpressure (send() waits while the socket buffer is full) and runs keepalive pings.
WS_IMPL = "websockets-sansio"


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    server = settings.server
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "ws": WS_IMPL,
        "ws_max_size": settings.stream.max_frame_bytes,
        "ws_per_message_deflate": server.ws_per_message_deflate,
        "ws_ping_interval": server.ws_ping_interval_s or None,
        "ws_ping_timeout": server.ws_ping_timeout_s or None,
        "timeout_graceful_shutdown": server.graceful_shutdown_s,
        "log_level": server.log_level,
        "lifespan": "on",
    }
    return uvicorn.Config(app, **{**options, **overrides})


def _env_port(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > 65535:
        raise ConfigError(f"STOCKPUSH_PORT: expected a port number 0-65535, got {value!r}")
    return int(value)


def _settings_for_serve(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    host = args.host or os.environ.get("STOCKPUSH_HOST") or None
    port = args.port if args.port is not None else _env_port(os.environ.get("STOCKPUSH_PORT"))
    updates: dict[str, Any] = {}
    if host:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    if updates:
        server = settings.server.model_copy(update=updates)
        settings = settings.model_copy(update={"server": server})
    return settings


def serve(args: argparse.Namespace) -> int:
    settings = _settings_for_serve(args)
    from service.app import create_app

    logging.basicConfig(level=settings.server.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(settings)
    logging.getLogger("service").info(
        "WebSocket implementation %s, inbound frames <= %d bytes, permessage-deflate %s",
        WS_IMPL,
        settings.stream.max_frame_bytes,
        "on" if settings.server.ws_per_message_deflate else "off",
    )
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


def check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.path)
    symbols = sum(len(feed.symbols) for feed in settings.feeds)
    print(f"{args.path}: OK ({len(settings.feeds)} feed(s), {symbols} symbols)")
    return 0


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stockpush", description="Live stock-price push service.")
    sub = parser.add_subparsers(dest="command", required=True)
    default_config = os.environ.get("STOCKPUSH_CONFIG", DEFAULT_CONFIG_PATH)

    p = sub.add_parser("serve", help="run the service")
    p.add_argument("--config", default=default_config, help="config file (env STOCKPUSH_CONFIG; default %(default)s)")
    p.add_argument("--host", help="bind address (env STOCKPUSH_HOST; default from the config)")
    p.add_argument("--port", type=_port, help="port (env STOCKPUSH_PORT; default from the config)")
    p.set_defaults(func=serve)

    p = sub.add_parser("check-config", help="validate a config file without starting")
    p.add_argument("path", nargs="?", default=default_config)
    p.set_defaults(func=check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"stockpush: refusing to start: {exc}" if args.command == "serve" else f"stockpush: {exc}",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
