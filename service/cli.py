"""The `stockpush` command: serve, check-config."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from service.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings

EXIT_CONFIG = 2
# uvicorn's websockets-sansio protocol (it applies transport backpressure since 0.52.1 and
# runs keepalive pings) with a direct frame writer added: see service.ws_protocol.
WS_IMPL = "service.ws_protocol:DirectWebSocketProtocol"


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
    app = create_app(settings, Path(args.config), freeze_connections=True)
    logging.getLogger("service").info(
        "WebSocket implementation: uvicorn websockets-sansio, frames written %s; inbound frames <= %d bytes,"
        " permessage-deflate %s",
        "through ASGI" if settings.server.ws_per_message_deflate else "directly",
        settings.stream.max_frame_bytes,
        "on" if settings.server.ws_per_message_deflate else "off",
    )
    # What exists now (modules, settings, symbol state: ~50k objects) lives as long as the
    # process. Frozen, the garbage collector's full collections skip it: they took 15-20 ms
    # each under load, a latency spike for every client. Connections are frozen the
    # same way as they come (service.gcfreeze). Collection itself stays as is.
    gc.freeze()
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


def check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.path)
    symbols = sum(len(feed.symbol_names()) for feed in settings.feeds)
    print(f"{args.path}: OK ({len(settings.feeds)} feed(s), {symbols} symbols)")
    return 0


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return int(value)


def watch(args: argparse.Namespace) -> int:
    from service.watch import run_live, run_watch

    refresh_s = args.refresh_ms / 1000 if args.refresh_ms else (0.25 if sys.stdout.isatty() else 1.0)
    main = run_watch(args.url, args.symbols, out=sys.stdout, err=sys.stderr, refresh_s=refresh_s)
    return run_live(main, interrupted=0)  # Ctrl-C is how a watch ends


def tail(args: argparse.Namespace) -> int:
    from service.tail import run_tail
    from service.watch import run_live

    channels = [ch.strip() for ch in args.channels.split(",") if ch.strip()]
    main = run_tail(
        args.url,
        args.symbols,
        channels=channels,
        json_lines=args.json,
        count=args.count,
        throttle_ms=args.throttle_ms,
        out=sys.stdout,
        err=sys.stderr,
    )
    return run_live(main, interrupted=130)


def record(args: argparse.Namespace) -> int:
    from service.record import record as run_record
    from service.watch import run_live

    async def main() -> int:
        try:
            rows = await run_record(args.url, args.symbols or ["*"], Path(args.out), args.seconds)
        except (OSError, ValueError) as exc:
            print(f"stockpush record: {exc}", file=sys.stderr)
            return 1
        print(f"{args.out}: {rows} rows", file=sys.stderr)
        return 0

    return run_live(main(), interrupted=0)  # Ctrl-C ends a recording; the file is complete


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return int(value)


def _add_url(p: argparse.ArgumentParser) -> None:
    # service.client.DEFAULT_URL, not imported: building the parser must not load the client.
    p.add_argument(
        "--url",
        default=os.environ.get("STOCKPUSH_URL", "ws://127.0.0.1:8000/v1/stream"),
        help="the stream endpoint (env STOCKPUSH_URL; default %(default)s)",
    )


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

    p = sub.add_parser("watch", help="a live table of symbols in the terminal (Ctrl-C quits)")
    p.add_argument("symbols", nargs="*", metavar="SYMBOL", help="symbols to show (default: every symbol)")
    _add_url(p)
    p.add_argument("--refresh-ms", type=_positive, help="redraw interval (default 250 on a terminal, 1000 otherwise)")
    p.set_defaults(func=watch)

    p = sub.add_parser("tail", help="print live events, one per line (--json for pipes)")
    p.add_argument("symbols", nargs="*", metavar="SYMBOL", help="symbols to follow (default: every symbol)")
    _add_url(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line, with a 'type'")
    p.add_argument("--channels", default="trades,quotes", help="comma-separated channels (default %(default)s)")
    p.add_argument("--count", type=_positive, help="exit after this many events")
    p.add_argument(
        "--throttle-ms", type=int, default=0, help="state channels: at most one update per stream per interval"
    )
    p.set_defaults(func=tail)

    p = sub.add_parser("record", help="save a live stream as a generic trades CSV, which a replay feed plays")
    p.add_argument("symbols", nargs="*", metavar="SYMBOL", help="symbols to record (default: every symbol)")
    _add_url(p)
    p.add_argument("--out", required=True, help="file to write (.csv, or .csv.gz for gzip)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.set_defaults(func=record)
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
