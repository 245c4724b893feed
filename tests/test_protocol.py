"""The v1 wire protocol: parsing client frames and encoding server frames, strings in and out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from service import protocol
from service.protocol import (
    MAX_DEPTH,
    PROTOCOL,
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    Subscriptions,
    Unsubscribe,
    parse_client_message,
)


def refused(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    return info.value


def nested_lists(levels: int, inner: str = "") -> str:
    """A ping `levels` containers deep: the message object, then arrays around `inner`."""
    return '{"op":"ping","x":' + "[" * (levels - 1) + inner + "]" * (levels - 1) + "}"


def nested_objects(levels: int, deepest: str) -> str:
    """A ping `levels` containers deep: the message object, then objects ending in `deepest`."""
    return '{"op":"ping","x":' + '{"a":' * (levels - 2) + deepest + "}" * (levels - 2) + "}"


# --- every op parses -----------------------------------------------------------------------


def test_subscribe_plain_form() -> None:
    """The plain subscribe form parses with channels, symbols, snapshot and id."""
    msg = parse_client_message(
        '{"op":"subscribe","id":1,"channels":["trades","quotes"],"symbols":["AAPL","msft"],"snapshot":false}'
    )
    assert isinstance(msg, Subscribe)
    assert msg.id == 1
    assert msg.channels == ["trades", "quotes"]
    assert msg.symbols == ["AAPL", "msft"]
    assert msg.snapshot is False
    assert msg.streams is None


def test_subscribe_defaults() -> None:
    """channels defaults to all (None) and snapshot to true."""
    msg = parse_client_message('{"op":"subscribe","symbols":["AAPL"]}')
    assert isinstance(msg, Subscribe)
    assert msg.channels is None
    assert msg.snapshot is True
    assert msg.id is None


def test_subscribe_resume_form() -> None:
    """The resume form parses into stream positions."""
    msg = parse_client_message(
        '{"op":"subscribe","id":"r1","streams":[{"ch":"trades","sym":"AAPL","epoch":"e-1","after_seq":1234},'
        '{"ch":"quotes","sym":"MSFT","epoch":"e-2","after_seq":0}]}'
    )
    assert isinstance(msg, Subscribe)
    assert msg.id == "r1"
    assert msg.symbols is None
    assert msg.streams is not None
    assert [(p.ch, p.sym, p.epoch, p.after_seq) for p in msg.streams] == [
        ("trades", "AAPL", "e-1", 1234),
        ("quotes", "MSFT", "e-2", 0),
    ]


def test_unsubscribe_symbols() -> None:
    """unsubscribe with symbols (and channels) parses."""
    msg = parse_client_message('{"op":"unsubscribe","channels":["quotes"],"symbols":["AAPL"]}')
    assert isinstance(msg, Unsubscribe)
    assert msg.symbols == ["AAPL"]
    assert msg.channels == ["quotes"]
    assert msg.all is False


def test_unsubscribe_all() -> None:
    """unsubscribe with all:true parses."""
    msg = parse_client_message('{"op":"unsubscribe","all":true,"id":9}')
    assert isinstance(msg, Unsubscribe)
    assert msg.all is True
    assert msg.symbols is None
    assert msg.id == 9


def test_subscriptions() -> None:
    """subscriptions parses."""
    msg = parse_client_message('{"op":"subscriptions","id":2}')
    assert isinstance(msg, Subscriptions)
    assert msg.id == 2


@pytest.mark.parametrize(("raw_id", "expected"), [('"abc"', "abc"), ("17", 17), ("null", None)])
def test_ping_keeps_id_and_client_ts(raw_id: str, expected: Any) -> None:
    """ping keeps a string or integer id and its client_ts for the pong."""
    msg = parse_client_message(f'{{"op":"ping","id":{raw_id},"client_ts":1700000000123}}')
    assert isinstance(msg, Ping)
    assert msg.id == expected
    assert msg.client_ts == 1700000000123


def test_ping_without_fields() -> None:
    """A bare ping parses."""
    msg = parse_client_message('{"op":"ping"}')
    assert isinstance(msg, Ping)
    assert msg.client_ts is None


# --- bad input -----------------------------------------------------------------------------

BAD_INPUT = [
    pytest.param("Hello, Server!", ["not valid JSON"], id="plain-text"),
    pytest.param("", ["not valid JSON"], id="empty"),
    pytest.param("[1,2]", ["JSON object", "array"], id="array"),
    pytest.param('"subscribe"', ["JSON object", "string"], id="string"),
    pytest.param("null", ["JSON object", "null"], id="null"),
    pytest.param('{"id":3}', ["missing 'op'", "subscribe"], id="missing-op"),
    pytest.param('{"op":"fly"}', ["unknown op", '"fly"'], id="unknown-op"),
    pytest.param('{"op":42}', ["unknown op", "42"], id="op-number"),
    pytest.param('{"op":"subscribe","symbols":"AAPL"}', ["symbols", "valid list"], id="symbols-string"),
    pytest.param('{"op":"subscribe","symbols":["AAPL",7]}', ["symbols[1]", "string"], id="symbol-number"),
    pytest.param('{"op":"subscribe","symbols":["AAPL"],"snapshot":"yes"}', ["snapshot", "boolean"], id="snapshot-yes"),
    pytest.param('{"op":"subscribe","symbols":["AAPL"],"snapshot":1}', ["snapshot", "boolean"], id="snapshot-1"),
    pytest.param(
        '{"op":"subscribe","streams":[{"ch":"trades","sym":"AAPL","epoch":"e","after_seq":-1}]}',
        ["streams[0].after_seq", "greater than or equal to 0"],
        id="after-seq-negative",
    ),
    pytest.param(
        '{"op":"subscribe","streams":[{"ch":"trades","sym":"AAPL","epoch":"e","after_seq":"5"}]}',
        ["streams[0].after_seq", "integer"],
        id="after-seq-string",
    ),
    pytest.param(
        '{"op":"subscribe","streams":[{"ch":"trades","sym":"AAPL","after_seq":5}]}',
        ["streams[0].epoch", "required"],
        id="resume-no-epoch",
    ),
    pytest.param('{"op":"ping","foo":1}', ["foo", "unknown field"], id="unknown-field"),
    pytest.param('{"op":"subscribe","symbols":["A"],"chanels":["trades"]}', ["chanels", "unknown field"], id="typo"),
    pytest.param('{"op":"ping","client_ts":"now"}', ["client_ts"], id="client-ts-string"),
    pytest.param('{"op":"ping","id":true}', ["id"], id="id-bool"),
    pytest.param('{"op":"ping","id":"' + "x" * 65 + '"}', ["id", "64"], id="id-too-long"),
    pytest.param(nested_lists(50, "1"), [f"deeper than {MAX_DEPTH}"], id="nested-50"),
    pytest.param(nested_lists(100_000), ["not valid JSON"], id="nested-100000"),
    pytest.param('{"op":"ping","client_ts":' + "9" * 5000 + "}", ["longer than 100 digits"], id="5000-digits"),
    pytest.param('{"op":"ping","client_ts":-' + "9" * 5000 + "}", ["longer than 100 digits"], id="5000-digits-neg"),
    pytest.param('{"op":"ping","client_ts":0.' + "1" * 5000 + "}", ["longer than 100 digits"], id="5000-digit-frac"),
    pytest.param('{"op":"ping","client_ts":1e400}', ["not valid JSON"], id="overflow-exp"),
    pytest.param('{"op":"ping","client_ts":NaN}', ["not valid JSON"], id="nan"),
    pytest.param('{"op":"ping","client_ts":Infinity}', ["not valid JSON"], id="infinity"),
    pytest.param('{"op":"ping","client_ts":-Infinity}', ["not valid JSON"], id="minus-infinity"),
    pytest.param(
        '{"op":"subscribe","symbols":["AAPL"],"streams":[{"ch":"trades","sym":"AAPL","epoch":"e","after_seq":1}]}',
        ["streams", "not both"],
        id="both-subscribe-forms",
    ),
    pytest.param('{"op":"subscribe","channels":["trades"]}', ["symbols", "required"], id="subscribe-no-symbols"),
    pytest.param('{"op":"unsubscribe"}', ["symbols", "all"], id="unsubscribe-neither"),
    pytest.param('{"op":"unsubscribe","all":true,"symbols":["A"]}', ["symbols", "all"], id="unsubscribe-both"),
    pytest.param('{"op":"unsubscribe","all":true,"channels":["trades"]}', ["all", "channels"], id="all-channels"),
    pytest.param('{"op":"subscribe","symbols":["' + "A" * 33 + '"]}', ["symbols[0]", "32"], id="symbol-too-long"),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_INPUT)
def test_bad_input_is_bad_request_naming_the_problem(text: str, fragments: list[str]) -> None:
    """Every malformed frame is BAD_REQUEST whose message names what is wrong."""
    exc = refused(text)
    assert exc.code is ErrorCode.BAD_REQUEST
    for fragment in fragments:
        assert fragment in exc.message
    assert len(exc.message) < 500


@pytest.mark.parametrize(
    "text",
    [
        '{"op":"fly","id":7}',
        '{"id":7}',
        '{"op":"subscribe","id":7,"symbols":"AAPL"}',
        '{"op":"ping","id":7,"bogus":true}',
        '{"op":"unsubscribe","id":7}',
        nested_lists(20).replace('{"op"', '{"id":7,"op"'),
    ],
)
def test_error_recovers_integer_id(text: str) -> None:
    """A refused message that carries a usable id gets it back in the error."""
    assert refused(text).id == 7


def test_error_recovers_string_id() -> None:
    """A string id is recovered for the error too."""
    assert refused('{"op":"subscribe","id":"req-1","symbols":[1]}').id == "req-1"


@pytest.mark.parametrize(
    "text",
    [
        "Hello, Server!",
        '{"op":"fly","id":true}',
        '{"op":"fly","id":1.5}',
        '{"op":"fly","id":{"a":1}}',
        '{"op":"fly","id":"' + "x" * 65 + '"}',
    ],
)
def test_error_has_no_id_when_unusable(text: str) -> None:
    """No id is echoed when the frame has none that the protocol allows."""
    assert refused(text).id is None


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda n: nested_lists(n), id="empty-array"),
        pytest.param(lambda n: nested_lists(n, "1"), id="array-of-number"),
        pytest.param(lambda n: nested_objects(n, "{}"), id="empty-object"),
        pytest.param(lambda n: nested_objects(n, '{"a":1}'), id="object-of-number"),
    ],
)
def test_depth_limit_boundary(build: Callable[[int], str]) -> None:
    """Exactly MAX_DEPTH nested containers pass the depth check, whatever the innermost holds."""
    # The `x` field is unknown, so the message is refused anyway, but not for its depth.
    at_limit = refused(build(MAX_DEPTH))
    assert "deeper" not in at_limit.message
    assert "x: unknown field" in at_limit.message
    assert f"deeper than {MAX_DEPTH}" in refused(build(MAX_DEPTH + 1)).message


# --- server messages -----------------------------------------------------------------------


def test_data_frame_joins_events_verbatim() -> None:
    """data_frame joins already-encoded events without re-encoding them."""
    # 1.10 would become 1.1 if the events were decoded and encoded again.
    events = ['{"ch":"trades","sym":"A","seq":1,"price":1.10}', '{"ch":"quotes","sym":"B","seq":9}']
    frame = protocol.data_frame(events)
    assert events[0] in frame
    assert events[1] in frame
    decoded = json.loads(frame)
    assert decoded["type"] == "data"
    assert [e["seq"] for e in decoded["events"]] == [1, 9]


def test_data_frame_of_no_events_is_valid_json() -> None:
    """An empty batch is still a valid data frame."""
    assert json.loads(protocol.data_frame([])) == {"type": "data", "events": []}


def test_with_prev_seq_adds_the_field() -> None:
    """with_prev_seq yields valid JSON with prev_seq and every original field."""
    wire = '{"ch":"quotes","sym":"AAPL","seq":12,"ts":5,"bid":1.5,"ask":1.51}'
    marked = json.loads(protocol.with_prev_seq(wire, 7))
    assert marked == {**json.loads(wire), "prev_seq": 7}


def test_error_shape() -> None:
    """error carries type, code, message, the id when answering, extra fields and fatal."""
    body = json.loads(protocol.error(ErrorCode.RATE_LIMITED, "slow down", id="q", retry_after_ms=250))
    assert body == {
        "type": "error",
        "code": "RATE_LIMITED",
        "message": "slow down",
        "id": "q",
        "retry_after_ms": 250,
        "fatal": False,
    }


def test_error_without_id_is_fatal_when_asked() -> None:
    """An error that answers no request has no id; fatal is as given."""
    body = json.loads(protocol.error(ErrorCode.SLOW_CONSUMER, "bye", fatal=True))
    assert "id" not in body
    assert body["fatal"] is True
    assert body["code"] == "SLOW_CONSUMER"


def test_pong_shape() -> None:
    """pong echoes id and client_ts and adds server_ts."""
    assert json.loads(protocol.pong(id=3, client_ts=1.5, server_ts=99)) == {
        "type": "pong",
        "id": 3,
        "client_ts": 1.5,
        "server_ts": 99,
    }


def test_pong_omits_absent_fields() -> None:
    """pong leaves out id and client_ts when the ping had none."""
    assert json.loads(protocol.pong(id=None, client_ts=None, server_ts=5)) == {"type": "pong", "server_ts": 5}


def test_hello_shape() -> None:
    """hello names the protocol and carries heartbeat, limits, channels and symbols."""
    body = json.loads(
        protocol.hello(
            server_ts=123,
            heartbeat_ms=5000,
            limits={"max_subscriptions": 10},
            channels={"trades": "event", "quotes": "state"},
            symbols=iter(["AAPL", "MSFT"]),
        )
    )
    assert body == {
        "type": "hello",
        "protocol": PROTOCOL,
        "server_ts": 123,
        "heartbeat_ms": 5000,
        "limits": {"max_subscriptions": 10},
        "channels": {"trades": "event", "quotes": "state"},
        "symbols": ["AAPL", "MSFT"],
    }
    assert PROTOCOL == "stockpush/1"


def test_reset_heartbeat_notice_shapes() -> None:
    """reset, heartbeat and notice carry the fields the protocol names."""
    assert json.loads(protocol.reset("trades", "AAPL", "e2", "EPOCH_CHANGED")) == {
        "type": "reset",
        "ch": "trades",
        "sym": "AAPL",
        "epoch": "e2",
        "reason": "EPOCH_CHANGED",
    }
    assert json.loads(protocol.heartbeat(42)) == {"type": "heartbeat", "server_ts": 42}
    assert json.loads(protocol.notice("SLOW_CONSUMER", "behind", buffered_bytes=3)) == {
        "type": "notice",
        "code": "SLOW_CONSUMER",
        "message": "behind",
        "buffered_bytes": 3,
    }
