"""The one settings model, loaded from YAML with errors that name file, field and line.

Every limit and timeout of the service is a field here with its default beside it.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feeds.market_config import MarketConfig
from feeds.random_walk import RandomWalkConfig
from feeds.replay import ReplayConfig
from feeds.synthetic import SyntheticConfig

DEFAULT_CONFIG_PATH = "config.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    # uvicorn waits this long for connections to finish after SIGTERM, then cancels them.
    graceful_shutdown_s: Annotated[int, Field(gt=0, le=300)] = 10
    # Protocol-level pings find dead TCP peers; None/0 disables them.
    ws_ping_interval_s: Annotated[float, Field(ge=0)] = 20.0
    ws_ping_timeout_s: Annotated[float, Field(ge=0)] = 20.0
    # Off by default: compression costs memory per connection and opens the
    # CRIME/BREACH class of attacks; ticks are small and numerous.
    ws_per_message_deflate: bool = False
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # POST /api/v1/admin/reload re-reads the config file's feeds (SIGHUP always does).
    # Off by default: anyone who can reach the port could trigger it.
    admin_reload: bool = False


class RateSettings(_Strict):
    per_s: Annotated[float, Field(gt=0)] = 20.0
    burst: Annotated[int, Field(ge=1)] = 40


class StreamSettings(_Strict):
    # A heartbeat goes out when nothing else was sent for this long.
    heartbeat_ms: Annotated[int, Field(ge=100, le=600_000)] = 5000
    # Inbound frames larger than this are refused with close 1009 (uvicorn's ws_max_size).
    max_frame_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65536
    max_subscriptions: Annotated[int, Field(ge=1)] = 1000
    # Per-connection outbox bound; half of it starts conflation, all of it closes 4100.
    # 1 MiB as Centrifugo's client queue: a stalled client costs the others until it is
    # closed, so a larger bound buys a client seconds of slack at everyone else's expense
    # (docs/performance.md, scenario 5).
    send_buffer_bytes: Annotated[int, Field(ge=4096)] = 1024 * 1024
    # Upper bound of one outbound `data` frame; more pending events go out in more frames.
    max_batch_bytes: Annotated[int, Field(ge=1024)] = 65536
    # Data frames per second for all connections together, at most. Past 1 ms per
    # connection (connections / max_frames_per_s), events go to the writers on a shared
    # beat instead of at once, so that they are batched instead of costing a frame each.
    # The beat is pace_ms (or longer, to stay within max_frames_per_s) and stretches up to
    # max_pace_ms while the process is busy (see service/pacer.py).
    max_frames_per_s: Annotated[int, Field(ge=100)] = 200_000
    pace_ms: Annotated[int, Field(ge=1, le=1000)] = 10
    max_pace_ms: Annotated[int, Field(ge=1, le=1000)] = 50
    # Events kept per stream for resume (G4).
    replay_window: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # Replayed events queued for one connection and not yet sent, at most; streams of a
    # resume beyond it get recovered:false, REPLAY_TOO_LARGE and a snapshot. Larger than
    # send_buffer_bytes, so that a client closed with 4100 can get back what its outbox and
    # socket buffers held.
    max_replay_bytes: Annotated[int, Field(ge=4096)] = 16 * 1024 * 1024
    inbound_rate: RateSettings = RateSettings()
    # Rate-limited messages within 10 s after which the connection is closed with 4200.
    flood_close_after: Annotated[int, Field(ge=1)] = 50
    # How long a closing client has to read its last frames before its connection is reset.
    close_timeout_s: Annotated[float, Field(gt=0)] = 5.0


class BusSettings(_Strict):
    kind: Literal["memory"] = "memory"


FeedSettings = Annotated[MarketConfig | ReplayConfig | RandomWalkConfig | SyntheticConfig, Field(discriminator="kind")]


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    stream: StreamSettings = StreamSettings()
    bus: BusSettings = BusSettings()
    feeds: Annotated[list[FeedSettings], Field(min_length=1)]

    def cross_field_errors(self) -> list[tuple[list[Any], str]]:
        """Rules that span fields, each with the location of the offending field."""
        errors: list[tuple[list[Any], str]] = []
        names: dict[str, int] = {}
        owner: dict[str, str] = {}
        for i, feed in enumerate(self.feeds):
            if feed.name in names:
                errors.append(
                    (["feeds", i, "name"], f"feed name {feed.name!r} is already used by feeds[{names[feed.name]}]")
                )
            names.setdefault(feed.name, i)
            for j, symbol in enumerate(feed.symbol_names()):
                if symbol in owner:
                    errors.append(
                        (
                            ["feeds", i, "symbols", j, "symbol"],
                            f"symbol {symbol} is in feed {owner[symbol]!r} and again in feed {feed.name!r}",
                        )
                    )
                owner.setdefault(symbol, feed.name)
        if self.stream.max_batch_bytes > self.stream.send_buffer_bytes:
            errors.append((["stream", "max_batch_bytes"], "must not exceed stream.send_buffer_bytes"))
        return errors


class ConfigError(Exception):
    """The configuration cannot be used; the message is written for the operator."""


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_settings(text, str(path), base_dir=path.parent)


def parse_settings(text: str, filename: str = "<config>", base_dir: Path | None = None) -> Settings:
    """Validate YAML text; relative file paths in it (replay files) resolve against base_dir."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(f"{filename}: {where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{filename}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        settings = Settings.model_validate(data, context={"base_dir": base_dir} if base_dir else None)
    except ValidationError as exc:
        lines = [_describe(err, root) for err in exc.errors(include_url=False)]
    else:
        lines = [_line(loc, message, root) for loc, message in settings.cross_field_errors()]
        if not lines:
            return settings
    noun = "error" if len(lines) == 1 else "errors"
    raise ConfigError(f"{filename}: {len(lines)} {noun}:\n" + "\n".join(lines))


def _describe(err: Any, root: yaml.Node | None) -> str:
    loc = _without_union_tag(list(err["loc"]))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(list(err["loc"][:-1]))
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = "unknown key"
        if hint:
            message += f"; did you mean {hint[0]!r}?"
        elif allowed:
            message += f"; expected one of {', '.join(sorted(allowed))}"
    elif err["type"] not in ("missing", "value_error") and "input" in err:
        message += f", got {err['input']!r}"[:200]
    return _line(loc, message, root)


def _line(loc: list[Any], message: str, root: yaml.Node | None) -> str:
    field = _format_loc(loc) or "(top level)"
    line = _line_of(root, loc)
    where = f" (line {line})" if line else ""
    return f"  {field}{where}: {message}"


_FEED_MODELS = typing.get_args(FeedSettings)[0]
_FEED_BY_KIND: dict[str, type[BaseModel]] = {
    kind: model
    for model in (typing.get_args(_FEED_MODELS) or (_FEED_MODELS,))
    for kind in typing.get_args(model.model_fields["kind"].annotation)
}
_FEED_KINDS = frozenset(_FEED_BY_KIND)


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and part in _FEED_KINDS


def _without_union_tag(loc: list[Any]) -> list[Any]:
    """pydantic puts the feed kind (e.g. 'market') into the location, right after the index."""
    if len(loc) > 2 and loc[0] == "feeds" and isinstance(loc[1], int) and _is_union_tag(loc[2]):
        return loc[:2] + loc[3:]
    return loc


def _format_loc(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """Line of the deepest YAML node on the path `loc` (1-based)."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    best = key.start_mark.line + 1
                    nxt = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
            best = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return best


def _allowed_keys(loc: list[Any]) -> list[str]:
    """Field names of the model found at pydantic's `loc`, for 'did you mean' hints."""
    tp: Any = Settings
    for i, part in enumerate(loc):
        tp = _unwrap(tp)
        if i == 2 and loc[0] == "feeds" and _is_union_tag(part):
            tp = _FEED_BY_KIND[part]
        elif isinstance(part, int) or typing.get_origin(tp) is dict:
            args = typing.get_args(tp)
            tp = args[-1] if args else None  # list[X] -> X, dict[K, V] -> V
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) != 1:
                return tp
            tp = models[0]
        else:
            return tp
