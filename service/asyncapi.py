"""The AsyncAPI 3.0 document of `/v1/stream`, generated from the protocol's own pydantic models.

Every payload schema comes from `service.protocol`: the client messages are the very models
the server parses requests with; the server messages are the models the Python client parses
with (tests/test_asyncapi.py holds real server frames against them). Nothing here restates a
field. The examples are built through the same models, so they cannot drift either.

The document describes the server: it *receives* the client's messages and *sends* its own.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import __version__, protocol
from service.events import CHANNEL_KINDS

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "stream"
ADDRESS = "/v1/stream"
SCHEMA_REF = "#/components/schemas/{model}"
CLOSE_BANDS = {
    "4000-4099": "fatal: fix something before reconnecting; do not retry automatically",
    "4100-4199": "reconnect at once (small jitter) and resume every stream",
    "4200-4299": "reconnect with exponential backoff and jitter, not before the error frame's retry_after_ms",
    "1012, 1013": "server restart or overload: back off as for 4200-4299, then resume",
    "other": "reconnect with backoff and resume (1006: the connection dropped without a close frame)",
}


@dataclasses.dataclass(frozen=True)
class Message:
    name: str
    model: type[BaseModel]
    summary: str
    examples: tuple[dict[str, Any], ...] = ()
    replies: tuple[str, ...] = ()  # for client messages: the server messages that answer them
    correlated: bool = False  # carries the request's `id`


EPOCH = "6b061c89-9be04abc"

CLIENT_MESSAGES = (
    Message(
        "subscribe",
        protocol.Subscribe,
        "Subscribe to channels x symbols, or resume streams from their position (the `streams` form). "
        "Give `symbols` (and optionally `channels`) or `streams`, not both.",
        (
            {"op": "subscribe", "id": 1, "channels": ["trades", "quotes"], "symbols": ["AAPL", "MSFT"]},
            {
                "op": "subscribe",
                "id": 2,
                "streams": [{"ch": "trades", "sym": "AAPL", "epoch": EPOCH, "after_seq": 18234}],
            },
            {"op": "subscribe", "id": 3, "channels": ["quotes"], "symbols": ["*"], "throttle_ms": 250},
        ),
        replies=("ack", "error"),
        correlated=True,
    ),
    Message(
        "unsubscribe",
        protocol.Unsubscribe,
        "Unsubscribe channels x symbols (every channel when none is given), or everything with `all`.",
        ({"op": "unsubscribe", "id": 4, "symbols": ["MSFT"]}, {"op": "unsubscribe", "id": 5, "all": True}),
        replies=("ack", "error"),
        correlated=True,
    ),
    Message(
        "subscriptions",
        protocol.Subscriptions,
        "Ask for the current subscription set.",
        ({"op": "subscriptions", "id": 6},),
        replies=("ack", "error"),
        correlated=True,
    ),
    Message(
        "ping",
        protocol.Ping,
        "Measure the round trip; `client_ts` is echoed.",
        ({"op": "ping", "id": "p1", "client_ts": 1795562634496},),
        replies=("pong", "error"),
        correlated=True,
    ),
)

DAY = {
    "open": 189.28,
    "high": 189.35,
    "low": 188.58,
    "last": 188.58,
    "prev_close": 189.5,
    "volume": 2362,
    "price_decimals": 2,
    "status": "open",
}
SERVER_MESSAGES = (
    Message(
        "hello",
        protocol.HelloMessage,
        "The first frame after the handshake: protocol, heartbeat interval, limits, channels, symbols.",
        (
            {
                "type": "hello",
                "protocol": protocol.PROTOCOL,
                "server_ts": 1795562634496,
                "heartbeat_ms": 5000,
                "limits": {
                    "max_subscriptions": 1000,
                    "max_frame_bytes": 65536,
                    "max_batch_bytes": 65536,
                    "send_buffer_bytes": 1048576,
                    "replay_window": 10000,
                    "max_replay_bytes": 16777216,
                    "inbound_rate": {"per_s": 20.0, "burst": 40},
                },
                "channels": dict(CHANNEL_KINDS),
                "symbols": ["AAPL", "MSFT"],
            },
        ),
    ),
    Message(
        "ack",
        protocol.AckMessage,
        "The answer to subscribe, unsubscribe and subscriptions. It comes before any snapshot or data of the "
        "streams it confirms; after an unsubscribe ack nothing more of those streams is sent.",
        (
            {
                "type": "ack",
                "id": 1,
                "op": "subscribe",
                "server_ts": 1795562634497,
                "ok": [{"ch": "trades", "sym": "AAPL", "epoch": EPOCH, "seq": 1}],
                "failed": [{"ch": "trades", "sym": "ZZZZ", "code": "UNKNOWN_SYMBOL", "message": "no symbol 'ZZZZ'"}],
                "subscriptions": {"trades": ["AAPL"]},
                "count": 1,
                "limit": 1000,
            },
            {
                "type": "ack",
                "id": 2,
                "op": "subscribe",
                "server_ts": 1795562694497,
                "ok": [{"ch": "trades", "sym": "AAPL", "epoch": EPOCH, "seq": 18240, "recovered": True, "replayed": 6}],
                "failed": [],
                "subscriptions": {"trades": ["AAPL"]},
                "count": 1,
                "limit": 1000,
            },
        ),
        correlated=True,
    ),
    Message(
        "snapshot",
        protocol.SnapshotMessage,
        "A stream's state, after the ack of a new subscription, after a resume that could not recover, and "
        "after a reset. Its seq is the last event folded in: the stream's next event has seq + 1.",
        (
            {
                "type": "snapshot",
                "ch": "quotes",
                "sym": "AAPL",
                "epoch": EPOCH,
                "seq": 55,
                "ts": 1795563654020,
                "data": {"bid": 188.5, "bid_size": 900, "ask": 188.51, "ask_size": 600, **DAY},
            },
        ),
    ),
    Message(
        "data",
        protocol.DataMessage,
        "Events of any subscribed streams, each stream in seq order, +1 per event; a state-channel event "
        "after a skip carries prev_seq.",
        (
            {
                "type": "data",
                "events": [
                    {"ch": "trades", "sym": "AAPL", "seq": 19, "ts": 1795563657776, "price": 188.42, "size": 100},
                    {
                        "prev_seq": 111,
                        "ch": "quotes",
                        "sym": "AAPL",
                        "seq": 121,
                        "ts": 1795563679570,
                        "bid": 188.69,
                        "bid_size": 1300,
                        "ask": 188.7,
                        "ask_size": 1800,
                    },
                    {
                        "ch": "bars.1s",
                        "sym": "AAPL",
                        "seq": 5,
                        "ts": 1795563636227,
                        "start_ts": 1795563635000,
                        "end_ts": 1795563636000,
                        "open": 189.35,
                        "high": 189.35,
                        "low": 189.31,
                        "close": 189.31,
                        "volume": 154,
                        "trades": 2,
                        "final": True,
                    },
                ],
            },
        ),
    ),
    Message(
        "reset",
        protocol.ResetMessage,
        "The stream restarted in a new epoch (e.g. its feed was restarted); a seq-0 snapshot follows.",
        ({"type": "reset", "ch": "trades", "sym": "AAPL", "epoch": "6b06231f-d83668f9", "reason": "FEED_RESTART"},),
    ),
    Message(
        "error",
        protocol.ErrorMessage,
        "A request failed (with its id), or, with fatal true, why the server is about to close the connection.",
        (
            {
                "type": "error",
                "id": 7,
                "code": "RATE_LIMITED",
                "message": "more than 20 messages/s (burst 40); this one was not processed",
                "retry_after_ms": 47,
                "fatal": False,
            },
        ),
        correlated=True,
    ),
    Message(
        "notice",
        protocol.NoticeMessage,
        "Information that needs no answer, e.g. SLOW_CONSUMER when state channels start being conflated.",
        (
            {
                "type": "notice",
                "code": "SLOW_CONSUMER",
                "message": "you are falling behind: state channels are conflated (see prev_seq)",
                "buffered_bytes": 524400,
                "limit_bytes": 1048576,
            },
        ),
    ),
    Message(
        "heartbeat",
        protocol.HeartbeatMessage,
        "Sent when nothing else was sent for heartbeat_ms. Silence for 3 x heartbeat_ms means a dead connection.",
        ({"type": "heartbeat", "server_ts": 1795562639496},),
    ),
    Message(
        "pong",
        protocol.PongMessage,
        "The answer to ping.",
        ({"type": "pong", "id": "p1", "client_ts": 1795562634496, "server_ts": 1795562634499},),
        correlated=True,
    ),
)

DESCRIPTION = """\
Live stock prices over one WebSocket. The server speaks first (`hello`); the client subscribes
to streams, each a (channel, symbol) pair with an `epoch` and a gap-free `seq`. A client that
keeps, per stream, the epoch and the last seq it processed can always recover: duplicates have
`seq <= last`, a legal jump carries `prev_seq == last` (state channels only), a new epoch comes
with a `reset` and a seq-0 snapshot, and after a reconnect the `streams` form of `subscribe`
replays exactly what was missed (or says `recovered: false` and sends a fresh snapshot).

Channels: {channels}.

Close codes, by what a client should do:
{bands}

Clients must ignore unknown fields, unknown message types, unknown channels and unknown codes.
"""


def _message_object(message: Message, refs: dict[type[BaseModel], str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": message.name,
        "title": message.name,
        "summary": message.summary,
        "contentType": "application/json",
        "payload": {"$ref": refs[message.model]},
    }
    if message.correlated:
        body["correlationId"] = {"description": "the request's `id`, echoed", "location": "$message.payload#/id"}
    if message.examples:
        body["examples"] = [
            {"name": f"{message.name}-{n}", "payload": _checked(message.model, example)}
            for n, example in enumerate(message.examples, 1)
        ]
    return body


def _checked(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    """An example, validated by the message's own model: a wrong example fails at import."""
    model.model_validate(example)
    return example


def _asyncapi_schema(node: Any) -> Any:
    """Pydantic's JSON Schema as an AsyncAPI Schema Object.

    Pydantic marks tagged unions with an OpenAPI `discriminator` object; AsyncAPI's is a
    property name meant for allOf inheritance. The members' `const` tags already tell them
    apart, so it is left out.
    """
    if isinstance(node, dict):
        return {
            key: _asyncapi_schema(value)
            for key, value in node.items()
            if not (key == "discriminator" and isinstance(value, dict))
        }
    if isinstance(node, list):
        return [_asyncapi_schema(item) for item in node]
    return node


@functools.cache
def _static() -> dict[str, Any]:
    messages = CLIENT_MESSAGES + SERVER_MESSAGES
    models = list(dict.fromkeys(m.model for m in messages))
    refs_by_key, top = models_json_schema([(m, "validation") for m in models], ref_template=SCHEMA_REF)
    refs = {model: refs_by_key[(model, "validation")]["$ref"] for model in models}
    channel_ref = {"$ref": f"#/channels/{CHANNEL}"}

    def message_ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/channels/{CHANNEL}/messages/{name}"}

    operations: dict[str, Any] = {}
    for message in CLIENT_MESSAGES:
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": channel_ref,
            "summary": message.summary,
            "messages": [message_ref(message.name)],
        }
        if message.replies:
            operation["reply"] = {"channel": channel_ref, "messages": [message_ref(r) for r in message.replies]}
        operations[f"receive{message.name.title()}"] = operation
    for message in SERVER_MESSAGES:
        operations[f"send{message.name.title()}"] = {
            "action": "send",
            "channel": channel_ref,
            "summary": message.summary,
            "messages": [message_ref(message.name)],
        }
    channels = ", ".join(f"`{ch}` ({kind})" for ch, kind in CHANNEL_KINDS.items())
    bands = "\n".join(f"- {band}: {what}" for band, what in CLOSE_BANDS.items())
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "stockpush stream",
            "version": __version__,
            "description": DESCRIPTION.format(channels=channels, bands=bands),
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "channels": {
            CHANNEL: {
                "address": ADDRESS,
                "title": "The v1 stream",
                "description": f"Protocol `{protocol.PROTOCOL}`: one JSON object per text frame, both ways.",
                "messages": {m.name: {"$ref": f"#/components/messages/{m.name}"} for m in messages},
            }
        },
        "operations": operations,
        "components": {
            "schemas": _asyncapi_schema(top.get("$defs", {})),
            "messages": {m.name: _message_object(m, refs) for m in messages},
        },
        "x-close-codes": {str(int(code)): code.name for code in protocol.CloseCode},
    }


def build_document(host: str = "127.0.0.1:8000", scheme: str = "ws") -> dict[str, Any]:
    """The whole document, with one server: `scheme` (ws or wss) on `host` (name:port)."""
    document = copy.deepcopy(_static())
    server = {"host": host, "protocol": scheme, "description": "this stockpush server"}
    return {**document, "servers": {"this": server}}


async def asyncapi_endpoint(request: Request) -> Response:
    """GET /asyncapi.json: the document, its server being the address the request came to."""
    scheme = "wss" if request.url.scheme in ("https", "wss") else "ws"
    return JSONResponse(build_document(host=request.url.netloc, scheme=scheme))
