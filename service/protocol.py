"""The v1 wire protocol: client messages in, server messages out. Pure code, no I/O.

Parsing turns a text frame into a typed message or raises ProtocolError with the code and
message the client will see. Encoders build server frames as JSON text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

PROTOCOL = "stockpush/1"
MAX_DEPTH = 8


class CloseCode(enum.IntEnum):
    """WebSocket close codes we send. 40xx fatal, 41xx resume now, 42xx back off."""

    NORMAL = 1000
    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    PROTOCOL_ERROR = 4000
    SLOW_CONSUMER = 4100
    RATE_LIMITED = 4200


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
    SUBSCRIPTION_LIMIT = "SUBSCRIPTION_LIMIT"
    RATE_LIMITED = "RATE_LIMITED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    INTERNAL = "INTERNAL"


MessageId = Annotated[str, StringConstraints(max_length=64)] | int
Name = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class _Op(BaseModel):
    # strict: "1" is not 1 and 1 is not true; extra=forbid: a misspelt field is an error,
    # not a silently ignored one.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: MessageId | None = None


class StreamPosition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    ch: Name
    sym: Name
    epoch: Annotated[str, StringConstraints(max_length=64)]
    after_seq: Annotated[int, Field(ge=0)]


class Subscribe(_Op):
    op: Literal["subscribe"]
    channels: list[Name] | None = None
    symbols: list[Name] | None = None
    snapshot: bool = True
    streams: list[StreamPosition] | None = None
    # State channels only: at most one update per stream per interval, the latest one.
    throttle_ms: Annotated[int, Field(ge=0, le=60_000)] = 0

    @model_validator(mode="after")
    def _one_form(self) -> Subscribe:
        if self.streams is not None:
            if self.symbols is not None or self.channels is not None:
                raise ValueError("use either 'streams' (resume) or 'channels'/'symbols', not both")
        elif self.symbols is None:
            raise ValueError("'symbols' is required (or 'streams' to resume)")
        return self


class Unsubscribe(_Op):
    op: Literal["unsubscribe"]
    channels: list[Name] | None = None
    symbols: list[Name] | None = None
    all: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> Unsubscribe:
        if self.all == (self.symbols is not None):
            raise ValueError("give either 'symbols' (and optionally 'channels') or 'all': true")
        if self.all and self.channels is not None:
            raise ValueError("'all' cannot be combined with 'channels'")
        return self


class Subscriptions(_Op):
    op: Literal["subscriptions"]


class Ping(_Op):
    op: Literal["ping"]
    client_ts: int | float | None = None


ClientMessage = Subscribe | Unsubscribe | Subscriptions | Ping
_client_message: TypeAdapter[ClientMessage] = TypeAdapter(Annotated[ClientMessage, Field(discriminator="op")])
OPS = ("subscribe", "unsubscribe", "subscriptions", "ping")


class ProtocolError(Exception):
    """A client request that cannot be served; becomes an `error` message."""

    def __init__(self, code: ErrorCode, message: str, id: MessageId | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.extra = extra


def parse_client_message(text: str) -> ClientMessage:
    """Decode one text frame; raise ProtocolError(BAD_REQUEST) naming what is wrong."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"expected a JSON object, got {_json_type(raw)}")
    msg_id = raw.get("id")
    if not (isinstance(msg_id, int | str) and not isinstance(msg_id, bool)) or (
        isinstance(msg_id, str) and len(msg_id) > 64
    ):
        msg_id = None
    if _depth(raw) > MAX_DEPTH:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"JSON nested deeper than {MAX_DEPTH} levels", msg_id)
    op = raw.get("op")
    if "op" not in raw:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"missing 'op'; expected one of {', '.join(OPS)}", msg_id)
    if op not in OPS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {_short(op)}; expected one of {', '.join(OPS)}", msg_id)
    try:
        return _client_message.validate_python(raw)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, _explain(exc), msg_id) from None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode() if value is not None else "null"
    return text if len(text) <= 40 else text[:37] + "..."


def _depth(value: Any, level: int = 1) -> int:
    """Nesting depth of containers (a scalar adds none); stops counting past MAX_DEPTH."""
    if not isinstance(value, dict | list):
        return level - 1
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    return max((_depth(v, level + 1) for v in value), default=level)


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = [p for p in err["loc"] if p not in OPS]
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        text = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {text}" if path else text)
    return "; ".join(parts)


# --- server messages -------------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> str:
    return orjson.dumps(message).decode()


def hello(
    *, server_ts: int, heartbeat_ms: int, limits: Mapping[str, Any], channels: Mapping[str, str], symbols: Iterable[str]
) -> str:
    return encode(
        {
            "type": "hello",
            "protocol": PROTOCOL,
            "server_ts": server_ts,
            "heartbeat_ms": heartbeat_ms,
            "limits": limits,
            "channels": channels,
            "symbols": list(symbols),
        }
    )


def error(code: ErrorCode, message: str, *, id: MessageId | None = None, fatal: bool = False, **extra: Any) -> str:
    body: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if id is not None:
        body["id"] = id
    body.update(extra)
    body["fatal"] = fatal
    return encode(body)


def notice(code: str, message: str, **extra: Any) -> str:
    return encode({"type": "notice", "code": code, "message": message, **extra})


def heartbeat(server_ts: int) -> str:
    return encode({"type": "heartbeat", "server_ts": server_ts})


def pong(*, id: MessageId | None, client_ts: float | None, server_ts: int) -> str:
    body: dict[str, Any] = {"type": "pong"}
    if id is not None:
        body["id"] = id
    if client_ts is not None:
        body["client_ts"] = client_ts
    body["server_ts"] = server_ts
    return encode(body)


def reset(ch: str, sym: str, epoch: str, reason: str) -> str:
    return encode({"type": "reset", "ch": ch, "sym": sym, "epoch": epoch, "reason": reason})


def data_frame(events: Iterable[str]) -> str:
    """One `data` frame from already-encoded events: joined, never re-encoded."""
    return '{"type":"data","events":[' + ",".join(events) + "]}"


def with_prev_seq(wire: str, prev_seq: int) -> str:
    """The event's JSON with `prev_seq` added: marks a legal jump after conflation (G5)."""
    return f'{{"prev_seq":{prev_seq},{wire[1:]}'
