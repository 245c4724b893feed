"""End to end: every bad-input row of the protocol is answered, and the connection keeps serving."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import StartServer
from tests.helpers import Server, open_client, recv, send, subscribed, until


async def _still_serving(ws: Any) -> None:
    await send(ws, {"op": "ping", "id": "alive"})
    pong, _ = await until(ws, lambda m: m["type"] == "pong")
    assert pong["id"] == "alive"


async def _error_for(ws: Any, frame: str | bytes) -> dict[str, Any]:
    await ws.send(frame)
    error, _ = await until(ws, lambda m: m["type"] == "error")
    return error


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("Hello, Server!", "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"op": "subscribe", "symbols": "AAPL"}', "symbols"),
        ('{"op": "subscribe", "symbols": ["AAPL"], "snapshot": "yes"}', "snapshot"),
        ('{"op": "dance"}', 'unknown op "dance"'),
        ('{"id": 3}', "missing 'op'"),
        ('{"op": "ping", "colour": "red"}', "colour: unknown field"),
        ('{"op": "ping", "client_ts": ' + "[" * 100 + "]" * 100 + "}", "nested deeper"),
        ('{"op": "ping", "client_ts": ' + "9" * 5000 + "}", "longer than 100 digits"),
        ('{"op": "ping", "client_ts": 0.' + "1" * 5000 + "}", "longer than 100 digits"),
        ('{"op": "ping", "client_ts": NaN}', "not valid JSON"),
        ('{"op": "ping", "client_ts": Infinity}', "not valid JSON"),
        (
            '{"op": "subscribe", "streams": [{"ch": "trades", "sym": "AAPL", "epoch": "x", "after_seq": -1}]}',
            "after_seq",
        ),
    ],
)
async def test_bad_text_frames_get_bad_request(server: Server, frame: str, needle: str) -> None:
    """Malformed, mistyped, unknown or hostile JSON → error BAD_REQUEST naming the problem; still open."""
    ws = await open_client(server)
    await recv(ws)
    error = await _error_for(ws, frame)
    assert error["code"] == "BAD_REQUEST"
    assert error["fatal"] is False
    assert needle in error["message"], error["message"]
    await _still_serving(ws)
    await ws.close()


async def test_error_echoes_the_request_id(server: Server) -> None:
    """An error answering a request carries that request's id."""
    ws = await open_client(server)
    await recv(ws)
    error = await _error_for(ws, '{"op": "subscribe", "id": "req-7", "symbols": 5}')
    assert error["id"] == "req-7" and error["code"] == "BAD_REQUEST"
    await ws.close()


async def test_binary_frame_gets_bad_request(server: Server) -> None:
    """A binary frame → error BAD_REQUEST; the connection stays open."""
    ws = await open_client(server)
    await recv(ws)
    error = await _error_for(ws, b'{"op": "ping"}')
    assert error["code"] == "BAD_REQUEST" and "binary" in error["message"]
    await _still_serving(ws)
    await ws.close()


async def test_oversized_frame_closes_1009_and_others_continue(server: Server) -> None:
    """A frame over 64 KiB closes that connection with 1009; another client keeps streaming."""
    other, _ = await subscribed(server, symbols=["AAPL"])
    ws = await open_client(server)
    await recv(ws)
    await ws.send('{"op":"ping","pad":"' + "x" * 70_000 + '"}')
    with pytest.raises(ConnectionClosed) as info:
        await until(ws, lambda m: False)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await until(other, lambda m: m["type"] == "data")
    await other.close()


async def test_unknown_symbol_and_channel_listed_in_failed(server: Server) -> None:
    """Unknown symbols and channels are per-stream failures in the ack; the rest is subscribed."""
    ws, ack = await subscribed(server, channels=["trades", "candles"], symbols=["AAPL", "NOPE"])
    failed = {(f["ch"], f["sym"]): f["code"] for f in ack["failed"]}
    assert failed == {
        ("trades", "NOPE"): "UNKNOWN_SYMBOL",
        ("candles", "AAPL"): "UNKNOWN_CHANNEL",
        ("candles", "NOPE"): "UNKNOWN_CHANNEL",
    }
    assert ack["subscriptions"] == {"trades": ["AAPL"]}
    await ws.close()


async def test_subscription_limit_changes_nothing(start_server: StartServer) -> None:
    """Past max_subscriptions → error SUBSCRIPTION_LIMIT and the subscription set is unchanged."""
    server = await start_server(stream={"max_subscriptions": 3})
    ws, ack = await subscribed(server, channels=["trades"], symbols=["AAPL", "MSFT"])
    assert ack["count"] == 2
    await send(ws, {"op": "subscribe", "id": "big", "symbols": ["NVDA", "TSLA"]})
    error, _ = await until(ws, lambda m: m["type"] == "error")
    assert error["code"] == "SUBSCRIPTION_LIMIT" and error["id"] == "big"
    assert error["limit"] == 3 and error["count"] == 2
    await send(ws, {"op": "subscriptions", "id": "q"})
    ack, seen = await until(ws, lambda m: m["type"] == "ack" and m.get("id") == "q")
    assert ack["subscriptions"] == {"trades": ["AAPL", "MSFT"]}
    assert not any(m["type"] == "snapshot" for m in seen)
    await ws.close()


async def test_rate_limit_then_flood_close(start_server: StartServer) -> None:
    """Past the inbound rate → RATE_LIMITED with retry_after_ms; persistent flooding → close 4200."""
    server = await start_server(stream={"inbound_rate": {"per_s": 5, "burst": 5}, "flood_close_after": 20})
    ws = await open_client(server)
    await recv(ws)
    for i in range(40):
        await send(ws, {"op": "ping", "id": i})
    answers: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            answers.append(await recv(ws))
    assert info.value.rcvd is not None and info.value.rcvd.code == 4200
    pongs = [m for m in answers if m["type"] == "pong"]
    limited = [m for m in answers if m["type"] == "error" and m["code"] == "RATE_LIMITED"]
    assert 5 <= len(pongs) <= 7  # the burst, plus what refilled meanwhile
    assert limited and all(m["retry_after_ms"] > 0 for m in limited)
    assert not limited[0]["fatal"] and limited[-1]["fatal"]
    # Every refusal up to the one that ended the connection was answered.
    assert len(limited) == 20


async def test_rate_limited_client_recovers_after_waiting(start_server: StartServer) -> None:
    """A client that waits retry_after_ms is served again."""
    server = await start_server(stream={"inbound_rate": {"per_s": 10, "burst": 2}})
    ws = await open_client(server)
    await recv(ws)
    for i in range(3):
        await send(ws, {"op": "ping", "id": i})
    error, _ = await until(ws, lambda m: m["type"] == "error")
    assert error["code"] == "RATE_LIMITED"
    await asyncio.sleep(error["retry_after_ms"] / 1000)
    await _still_serving(ws)
    await ws.close()


async def test_server_failure_closes_only_that_client_1011(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server-side exception while serving one client closes it alone with 1011, logged."""
    from service.session import Session

    healthy, _ = await subscribed(server, symbols=["AAPL"])
    victim = await open_client(server)
    await recv(victim)
    original = Session._dispatch

    def broken(self: Session, msg: Any) -> None:
        if getattr(msg, "id", None) == "boom":
            raise RuntimeError("injected failure")
        original(self, msg)

    monkeypatch.setattr(Session, "_dispatch", broken)
    await send(victim, {"op": "ping", "id": "boom"})
    with pytest.raises(ConnectionClosed) as info:
        await until(victim, lambda m: False)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert "injected failure" in caplog.text
    await until(healthy, lambda m: m["type"] == "data")
    await _still_serving(healthy)
    await healthy.close()
