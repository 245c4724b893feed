"""The v1 wire protocol: client messages in, server messages out. Pure code, no I/O.

Parsing turns a text frame into a typed message or raises ProtocolError with the code and
message the client will see. Encoders build server frames as JSON text.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

from feeds.base import STATUSES

PROTOCOL = "stockpush/1"
MAX_DEPTH = 8
MAX_DIGITS = 100
# Longer digit runs can only be absurd numbers (ids, symbols and epochs are shorter).
LONG_NUMBER = re.compile(rf"[0-9]{{{MAX_DIGITS + 1},}}")


class CloseCode(enum.IntEnum):
    """WebSocket close codes we send. 40xx fatal, 41xx resume now, 42xx back off."""

    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009  # sent by uvicorn (ws_max_size)
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # sent by uvicorn on shutdown
    SLOW_CONSUMER = 4100
    RATE_LIMITED = 4200


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
    SUBSCRIPTION_LIMIT = "SUBSCRIPTION_LIMIT"
    NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
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
    if LONG_NUMBER.search(text):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"a number longer than {MAX_DIGITS} digits", peek_id(text))
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"expected a JSON object, got {_json_type(raw)}")
    msg_id = _usable_id(raw.get("id"))
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


def peek_id(text: str) -> MessageId | None:
    """The request's `id`, if the text is a JSON object with a usable one; else None."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return _usable_id(raw.get("id")) if isinstance(raw, dict) else None


def _usable_id(value: Any) -> MessageId | None:
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, str) and len(value) > 64):
        return None
    return value


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


# --- server messages as models ---------------------------------------------------------
# The server builds its frames as dicts and strings (above, and events in the sequencer,
# encoded once). These models describe the same shapes, for the AsyncAPI document
# (service/asyncapi.py) and for parsing in the Python client (service/client.py); the server
# never builds or checks a frame through them. tests/test_asyncapi.py holds real frames
# against them. Within v1 changes are additive, so clients ignore fields they do not know
# (extra="ignore"); codes that may grow are plain strings whose known values are listed in
# the schema only (`_known`).

RESUME_REFUSALS = ("EPOCH_CHANGED", "TOO_OLD", "SEQ_AHEAD", "REPLAY_TOO_LARGE", "UNKNOWN_STREAM")
FAILED_CODES = (ErrorCode.UNKNOWN_SYMBOL.value, ErrorCode.UNKNOWN_CHANNEL.value, "NOT_SUBSCRIBED")
NOTICE_CODES = ("SLOW_CONSUMER", "STREAM_REMOVED")


def _known(*values: str | None) -> dict[str, Any]:
    """Schema-only enum: the values sent today. Parsing accepts others (additive changes)."""
    return {"json_schema_extra": {"enum": list(values)}}


class _ServerModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Event(_ServerModel):
    ch: str = Field(description="channel")
    sym: str = Field(description="symbol, upper case")
    seq: int = Field(ge=1, description="+1 per event of this stream within its epoch")
    ts: int = Field(description="event time, Unix milliseconds")


class TradeEvent(_Event):
    """A trade print. `trades` is an event channel: never conflated, never throttled."""

    ch: Literal["trades"]
    price: float
    size: int = Field(gt=0)


class _StateEvent(_Event):
    prev_seq: int | None = Field(
        None,
        description="Only when this event does not follow seq - 1: the seq this client saw last on the stream "
        "(the server conflated or throttled the ones between). The jump is then legal.",
    )


class QuoteEvent(_StateEvent):
    """Best bid and offer (state channel `quotes`)."""

    ch: Literal["quotes"]
    bid: float
    bid_size: int = Field(gt=0)
    ask: float
    ask_size: int = Field(gt=0)


class StatusEvent(_StateEvent):
    """The symbol's trading status changed, or a new trading day started (reason NEW_DAY)."""

    ch: Literal["status"]
    status: str | None = Field(**_known(*STATUSES, None))
    reason: str = Field(description="why, e.g. NEW_DAY; may be empty")
    prev_close: float


class BarEvent(_StateEvent):
    """An OHLCV bar: the forming one as it changes, then once more with final true."""

    ch: Literal["bars.1s", "bars.1m"]
    start_ts: int
    end_ts: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    trades: int
    final: bool


MarketEvent = Annotated[TradeEvent | QuoteEvent | StatusEvent | BarEvent, Field(discriminator="ch")]
_market_event: TypeAdapter[MarketEvent] = TypeAdapter(MarketEvent)


class DayStats(_ServerModel):
    """The symbol's trading day so far."""

    open: float | None
    high: float | None
    low: float | None
    last: float | None
    prev_close: float
    volume: int
    price_decimals: int = Field(ge=0, description="decimals of the symbol's tick size: format prices with these")
    status: str | None = Field(**_known(*STATUSES, None))


class SnapshotData(DayStats):
    """The fields of the stream's latest event, if it had one, and the symbol's day statistics.

    Names shared by both (open, high, low, volume in a bars snapshot): see docs/protocol.md 4.3.
    """

    model_config = ConfigDict(extra="allow", frozen=True)


class InboundRate(_ServerModel):
    per_s: float
    burst: int


class Limits(_ServerModel):
    max_subscriptions: int
    max_frame_bytes: int
    max_batch_bytes: int
    send_buffer_bytes: int
    replay_window: int = Field(description="events kept per stream for resume")
    max_replay_bytes: int | None = Field(None, description="what one resume request may replay at most")
    inbound_rate: InboundRate


class HelloMessage(_ServerModel):
    """The server speaks first: protocol, limits, channels and symbols."""

    type: Literal["hello"]
    protocol: str = Field(examples=[PROTOCOL])
    server_ts: int
    heartbeat_ms: int = Field(description="a heartbeat arrives when nothing else was sent for this long")
    limits: Limits
    channels: dict[str, Annotated[str, Field(**_known("event", "state"))]] = Field(
        description="channel -> kind: 'event' channels are never conflated, 'state' channels may be"
    )
    symbols: list[str]


class AckEntry(_ServerModel):
    ch: str
    sym: str
    epoch: str | None = Field(None, description="absent in unsubscribe acks")
    seq: int | None = Field(None, description="the stream's current seq; absent in unsubscribe acks")
    recovered: bool | None = Field(None, description="resume only: whether the missed events follow")
    replayed: int | None = Field(None, description="resume only, when recovered: how many events are replayed")
    reason: str | None = Field(
        None, description="resume only, when not recovered: why; a fresh snapshot follows", **_known(*RESUME_REFUSALS)
    )


class AckFailure(_ServerModel):
    ch: str
    sym: str
    code: str = Field(**_known(*FAILED_CODES))
    message: str


class AckMessage(_ServerModel):
    """Answer to subscribe, unsubscribe and subscriptions; always carries the full subscription set."""

    type: Literal["ack"]
    id: MessageId | None = None
    op: Literal["subscribe", "unsubscribe", "subscriptions"]
    server_ts: int
    ok: list[AckEntry] | None = Field(None, description="absent for op subscriptions")
    failed: list[AckFailure] | None = Field(None, description="absent for op subscriptions")
    subscriptions: dict[str, list[str]] = Field(description="channel -> symbols, after this request")
    count: int
    limit: int


class SnapshotMessage(_ServerModel):
    """A stream's state; its seq is the last event folded in, so the next event has seq + 1."""

    type: Literal["snapshot"]
    ch: str
    sym: str
    epoch: str
    seq: int = Field(ge=0, description="0 right after a reset")
    ts: int
    data: SnapshotData

    def latest_event(self) -> TradeEvent | QuoteEvent | StatusEvent | BarEvent | None:
        """The stream's latest event as folded into `data`, or None when it has none yet (seq 0)."""
        if self.seq == 0:
            return None
        fields = {**self.data.model_dump(), "ch": self.ch, "sym": self.sym, "seq": self.seq, "ts": self.ts}
        return _market_event.validate_python(fields)


class DataMessage(_ServerModel):
    """One or more events, of any subscribed streams, each stream in seq order."""

    type: Literal["data"]
    events: list[MarketEvent]


class ResetMessage(_ServerModel):
    """The stream restarted in a new epoch: what came before is void; a seq-0 snapshot follows."""

    type: Literal["reset"]
    ch: str
    sym: str
    epoch: str = Field(description="the new epoch")
    reason: str = Field(examples=["FEED_RESTART"])


class ErrorMessage(_ServerModel):
    """A request failed; with fatal true the server closes the connection right after it."""

    type: Literal["error"]
    id: MessageId | None = Field(None, description="the request's id, when it had a valid one")
    code: str = Field(**_known(*(code.value for code in ErrorCode)))
    message: str
    fatal: bool
    retry_after_ms: int | None = Field(None, description="RATE_LIMITED: wait this long before sending again")
    limit_bytes: int | None = Field(None, description="SLOW_CONSUMER: the outbox limit")
    count: int | None = Field(None, description="SUBSCRIPTION_LIMIT: subscriptions now")
    limit: int | None = Field(None, description="SUBSCRIPTION_LIMIT: the limit")


class NoticeMessage(_ServerModel):
    """Something the client should know that needs no answer."""

    type: Literal["notice"]
    code: str = Field(**_known(*NOTICE_CODES))
    message: str
    buffered_bytes: int | None = None
    limit_bytes: int | None = None


class HeartbeatMessage(_ServerModel):
    """Sent when nothing else was sent for heartbeat_ms."""

    type: Literal["heartbeat"]
    server_ts: int


class PongMessage(_ServerModel):
    """Answer to ping."""

    type: Literal["pong"]
    id: MessageId | None = None
    client_ts: int | float | None = Field(None, description="echoed from the ping")
    server_ts: int


ServerMessage = Annotated[
    HelloMessage
    | AckMessage
    | SnapshotMessage
    | DataMessage
    | ResetMessage
    | ErrorMessage
    | NoticeMessage
    | HeartbeatMessage
    | PongMessage,
    Field(discriminator="type"),
]
_server_message: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def parse_server_message(text: str | bytes) -> ServerMessage | None:
    """Decode one server frame; None for a `type` this version does not know (to be ignored).

    Raises pydantic.ValidationError when a known message does not have its documented shape.
    """
    try:
        return _server_message.validate_json(text)
    except ValidationError as exc:
        if any(err["type"] == "union_tag_invalid" and not err["loc"] for err in exc.errors()):
            return None
        raise
