"""The AsyncAPI 3.0 document: valid against the official schema, generated from the protocol's
models, served at /asyncapi.json, and true to what a real server sends."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic.json_schema import models_json_schema

from feeds.base import STATUSES, Status
from service import protocol
from service.asyncapi import CLIENT_MESSAGES, SCHEMA_REF, SERVER_MESSAGES, _asyncapi_schema, build_document
from service.bus import ReplayRefused
from service.bus.memory import MemoryBus
from service.events import CHANNEL_KINDS, Event, StreamReset
from tests.conftest import StartServer
from tests.helpers import RawClient, Server, open_client, recv, send, until

# From the npm package @asyncapi/specs (Apache-2.0): see tests/data/README.md.
ASYNCAPI_SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.json"
ALL_CHANNELS = list(CHANNEL_KINDS)


@pytest.fixture(scope="module")
def jsonschema() -> Any:
    """The jsonschema package; skipped when missing, unless CI is set (then it is a failure)."""
    try:
        import jsonschema as module
    except ImportError:  # pragma: no cover - depends on the environment
        if os.environ.get("CI"):
            pytest.fail("jsonschema is not installed; it belongs in the test extra")
        pytest.skip("jsonschema is not installed (pip install jsonschema) to check the AsyncAPI document")
    return module


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as generated for the default address."""
    return build_document()


def strict_validators(document: dict[str, Any], jsonschema: Any) -> dict[str, Any]:
    """A validator per message name; objects refuse unknown fields (except snapshot data, open by design)."""
    schemas = copy.deepcopy(document["components"]["schemas"])
    for name, schema in schemas.items():
        if "properties" in schema and name != "SnapshotData":
            schema.setdefault("additionalProperties", False)
    out = {}
    for name, message in document["components"]["messages"].items():
        root = {"$ref": message["payload"]["$ref"], "components": {"schemas": schemas}}
        out[name] = jsonschema.Draft7Validator(root)
    return out


def assert_valid(validators: dict[str, Any], name: str, payload: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[name].iter_errors(payload)]
    assert errors == [], (name, payload)


def test_document_is_valid_asyncapi_3(document: dict[str, Any], jsonschema: Any) -> None:
    """The document validates against the AsyncAPI 3.0.0 JSON Schema; a broken one does not."""
    spec = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(spec)(spec)
    assert [e.message for e in validator.iter_errors(document)] == []
    broken = copy.deepcopy(document)
    broken["operations"]["sendHello"]["action"] = "publish"  # AsyncAPI 2 vocabulary
    assert list(validator.iter_errors(broken))
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["stream"]["address"] == "/v1/stream"


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    """Every $ref points at something in the document."""
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert len(refs) > 50
    for ref in refs:
        assert ref.startswith("#/"), ref
        target: Any = document
        for part in ref[2:].split("/"):
            assert part in target, ref
            target = target[part]


def test_operations_cover_both_directions(document: dict[str, Any]) -> None:
    """The server receives every client op and sends every server message type; requests name their replies."""
    operations = document["operations"]
    received = {op["messages"][0]["$ref"].rsplit("/", 1)[1] for op in operations.values() if op["action"] == "receive"}
    sent = {op["messages"][0]["$ref"].rsplit("/", 1)[1] for op in operations.values() if op["action"] == "send"}
    assert received == set(protocol.OPS)
    server_types = {
        model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
        for model in protocol.ServerMessage.__origin__.__args__  # type: ignore[attr-defined]
    }
    assert sent == server_types
    reply = operations["receiveSubscribe"]["reply"]["messages"]
    assert [r["$ref"] for r in reply] == ["#/channels/stream/messages/ack", "#/channels/stream/messages/error"]


def test_schemas_are_the_protocol_models(document: dict[str, Any]) -> None:
    """Each payload schema is exactly what pydantic generates from the model the server or client parses with."""
    schemas = document["components"]["schemas"]
    for message in CLIENT_MESSAGES + SERVER_MESSAGES:
        _, top = models_json_schema([(message.model, "validation")], ref_template=SCHEMA_REF)
        for name, schema in _asyncapi_schema(top["$defs"]).items():
            assert schemas[name] == schema, name
    assert schemas["Subscribe"]["additionalProperties"] is False  # the server refuses unknown fields
    assert "additionalProperties" not in schemas["TradeEvent"]  # clients ignore unknown fields


def test_examples_validate_against_their_schemas(document: dict[str, Any], jsonschema: Any) -> None:
    """Every example, strictly checked: no unknown field, every required one present."""
    validators = strict_validators(document, jsonschema)
    count = 0
    for name, message in document["components"]["messages"].items():
        for example in message.get("examples", []):
            assert_valid(validators, name, example["payload"])
            count += 1
    assert count >= len(document["components"]["messages"])
    with pytest.raises(AssertionError):
        assert_valid(validators, "hello", {"type": "hello"})


def test_codes_channels_and_reasons_are_all_documented(document: dict[str, Any]) -> None:
    """Every channel, error code, close code, status and resume refusal the server has appears in the document."""
    schemas = document["components"]["schemas"]
    channels = set()
    for event in ("TradeEvent", "QuoteEvent", "StatusEvent", "BarEvent"):
        ch = schemas[event]["properties"]["ch"]
        channels |= {ch["const"]} if "const" in ch else set(ch["enum"])
    assert channels == set(CHANNEL_KINDS)
    assert {code.value for code in protocol.ErrorCode} <= set(schemas["ErrorMessage"]["properties"]["code"]["enum"])
    assert document["x-close-codes"] == {str(int(c)): c.name for c in protocol.CloseCode}
    assert set(STATUSES) | {None} == set(schemas["SnapshotData"]["properties"]["status"]["enum"])
    bus = MemoryBus(2)
    bus.publish(StreamReset("trades", "AAPL", "E1", "START", {}))
    for seq in (1, 2, 3):
        bus.publish(Event("trades", "AAPL", "E1", seq, seq, {}, {}, "{}"))
    reasons = set()
    for key, epoch, after in ((("trades", "ZZZ"), "E1", 0), (("trades", "AAPL"), "E0", 0),
                              (("trades", "AAPL"), "E1", 9), (("trades", "AAPL"), "E1", 0)):  # fmt: skip
        with pytest.raises(ReplayRefused) as refused:
            bus.replay(key, epoch, after)
        reasons.add(refused.value.reason)
    assert reasons < set(protocol.RESUME_REFUSALS)  # and REPLAY_TOO_LARGE, from the session


async def test_served_at_asyncapi_json_with_this_server(server: Server) -> None:
    """GET /asyncapi.json returns the document, its server being the address asked."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.http}/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["servers"] == {
        "this": {"host": f"127.0.0.1:{server.port}", "protocol": "ws", "description": "this stockpush server"}
    }
    assert body == orjson.loads(orjson.dumps(build_document(host=f"127.0.0.1:{server.port}")))


async def test_real_frames_match_the_documented_schemas(start_server: StartServer, jsonschema: Any) -> None:
    """Every kind of frame a real server sends, gathered over one session, is valid against its strict schema."""
    server = await start_server(stream={"max_subscriptions": 8})
    frames: list[dict[str, Any]] = []
    ws = await open_client(server)
    frames.append(await recv(ws))

    async def ask(message: dict[str, Any], kind: str = "ack") -> dict[str, Any]:
        await send(ws, message)
        answer, before = await until(ws, lambda m: m["type"] == kind and m.get("id") == message["id"])
        frames.extend([*before, answer])
        return answer

    ack = await ask({"op": "subscribe", "id": 1, "channels": ALL_CHANNELS, "symbols": ["AAPL", "ZZZZ"]})
    assert ack["failed"] and ack["ok"]
    await ask({"op": "subscribe", "id": 2, "channels": ["quotes"], "symbols": ["MSFT"], "throttle_ms": 50})
    server.runtime.sequencer.on_tick(Status("AAPL", server.runtime.hub.now_ms(), "halted", "TEST"))
    events: set[str] = set()
    prev_seq = False
    async with asyncio.timeout(10):
        while not (events >= set(ALL_CHANNELS) - {"bars.1m"} and prev_seq):
            frames.append(await recv(ws))
            for event in frames[-1].get("events", []):
                events.add(event["ch"])
                prev_seq = prev_seq or "prev_seq" in event
    seq = server.runtime.hub.streams[("trades", "AAPL")].seq
    epoch = server.runtime.hub.streams[("trades", "AAPL")].epoch
    resume = [{"ch": "trades", "sym": "AAPL", "epoch": epoch, "after_seq": max(0, seq - 2)},
              {"ch": "quotes", "sym": "AAPL", "epoch": "gone", "after_seq": 1}]  # fmt: skip
    ack = await ask({"op": "subscribe", "id": 3, "streams": resume})
    assert {e["recovered"] for e in ack["ok"]} == {True, False}
    await ask({"op": "subscribe", "id": 4, "symbols": ["*"]}, kind="error")  # SUBSCRIPTION_LIMIT
    await ask({"op": "unsubscribe", "id": 5, "symbols": ["TSLA"]})
    await ask({"op": "subscriptions", "id": 6})
    await ask({"op": "ping", "id": 7, "client_ts": 1.5}, kind="pong")
    await ask({"op": "nonsense", "id": 8}, kind="error")
    server.runtime.sequencer.reset(["AAPL"], "TEST")
    _, before = await until(ws, lambda m: m["type"] == "snapshot" and m["seq"] == 0)
    frames.extend(before)
    await ws.close()
    idle = await open_client(server)
    frames.append(await recv(idle))
    frames.append(await recv(idle))  # a heartbeat: nothing else is sent to an idle client
    await idle.close()
    for _ in range(45):  # past the burst of 40: RATE_LIMITED with retry_after_ms, not yet a close
        await send(idle := idle if idle.state.name == "OPEN" else await open_client(server), {"op": "ping"})
    async with asyncio.timeout(10):
        while not any(f.get("code") == "RATE_LIMITED" for f in frames):
            frames.append(await recv(idle))
    await idle.close()

    kinds = {f["type"] for f in frames}
    assert kinds == {"hello", "ack", "snapshot", "data", "reset", "error", "heartbeat", "pong"}
    check_frames(frames, jsonschema)


async def test_slow_consumer_frames_match_the_documented_schemas(start_server: StartServer, jsonschema: Any) -> None:
    """The slow-consumer ladder's frames (notice, conflated events, the fatal error) match their schemas too."""
    server = await start_server(
        symbols=20,
        interval_ms=1,
        stream={"send_buffer_bytes": 16 * 1024, "max_batch_bytes": 4096},
        server={"ws_ping_interval_s": 0},
    )

    async def stalled(channels: list[str]) -> list[dict[str, Any]]:
        """A client that stops reading: quotes alone get conflated; trades never are, so they end in 4100."""
        raw = RawClient(server.url, rcvbuf=4096)
        try:
            await raw.connect()
            assert raw.sock is not None
            peer = f"127.0.0.1:{raw.sock.getsockname()[1]}"
            await raw.send_json({"op": "subscribe", "id": "slow", "channels": channels, "symbols": ["*"]})
            while not (session := next((s for s in server.runtime.connections if s.peer == peer), None)):
                await asyncio.sleep(0.01)
            # Quotes: until one pending quote was replaced by a newer one, so a frame with
            # prev_seq is queued (conflation alone may end before any replacement happens).
            while not (session.outbox.conflated if channels == ["quotes"] else session.fatal):
                await asyncio.sleep(0.01)
            messages, _ = await raw.read_all(timeout=1.0 if channels == ["quotes"] else 10.0)
            return messages
        finally:
            raw.close()

    async with asyncio.timeout(30):
        conflated, closed = await asyncio.gather(stalled(["quotes"]), stalled(["trades", "quotes"]))
    frames = conflated + closed
    assert any(f["type"] == "notice" and f["code"] == "SLOW_CONSUMER" for f in frames)
    assert any("prev_seq" in e for f in conflated for e in f.get("events", []))
    assert any(f["type"] == "error" and f["code"] == "SLOW_CONSUMER" and f["fatal"] for f in closed)
    check_frames(frames, jsonschema)


def check_frames(frames: list[dict[str, Any]], jsonschema: Any) -> None:
    """Each frame valid against its strict schema, and parsed by the client's models without losing a field.

    Of thousands of data frames alike, a sample (jsonschema is slow): the first 50, and every one with prev_seq.
    """
    validators = strict_validators(build_document(), jsonschema)
    data = [f for f in frames if f["type"] == "data"]
    sample = data[:50] + [f for f in data[50:] if any("prev_seq" in e for e in f["events"])][:50]
    for frame in [f for f in frames if f["type"] != "data"] + sample:
        assert_valid(validators, frame["type"], frame)
        parsed = protocol.parse_server_message(orjson.dumps(frame))
        assert parsed is not None
        assert parsed.model_dump(exclude_unset=True) == frame
