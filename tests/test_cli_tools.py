"""`stockpush watch` and `stockpush tail`: run as the real command against a real server."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from typing import Any

import orjson
import pytest

from service.client import QuoteEvent, SnapshotMessage, TradeEvent
from service.protocol import SnapshotData
from service.watch import GREEN, RED, Board, render, wants_color
from tests.helpers import TIMEOUT, Server

ESC = "\x1b"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def stockpush(*args: str, env: dict[str, str] | None = None, **options: Any) -> subprocess.Popen[bytes]:
    """The command, as `python -m service`, with the environment given on top of this one."""
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "STOCKPUSH_URL")}
    return subprocess.Popen([sys.executable, "-m", "service", *args], env={**environment, **(env or {})}, **options)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def finish(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    out, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    return (out or b"").decode(), (err or b"").decode()


# --- tail ----------------------------------------------------------------------------------


async def test_tail_json_prints_one_parseable_event_per_line(server: Server) -> None:
    """`tail --json` (URL from STOCKPUSH_URL) prints JSON lines: snapshots first, then events in seq order."""
    proc = stockpush(
        "tail", "--json", "--count", "80", "aapl", "MSFT", env={"STOCKPUSH_URL": server.url}, stdout=subprocess.PIPE
    )
    out, _ = await finish(proc)
    assert proc.returncode == 0
    lines = out.splitlines()
    assert len(lines) == 80
    last: dict[tuple[str, str], int] = {}
    for line in lines:
        event = orjson.loads(line)
        key = (event["ch"], event["sym"])
        assert event["type"] == {"trades": "trade", "quotes": "quote"}.get(event["ch"]) or event["type"] == "snapshot"
        if event["type"] == "snapshot":
            assert key not in last
        else:
            assert event["seq"] == last[key] + 1 or event.get("prev_seq") == last[key]
        last[key] = event["seq"]
    assert set(last) == {(ch, sym) for ch in ("trades", "quotes") for sym in ("AAPL", "MSFT")}


async def test_tail_text_lines_and_channels(server: Server) -> None:
    """Without --json, one readable line per event, for the channels asked."""
    proc = stockpush(
        "tail", "--url", server.url, "--channels", "bars.1s", "--count", "5", "AAPL", stdout=subprocess.PIPE
    )
    out, _ = await finish(proc)
    assert proc.returncode == 0
    lines = out.splitlines()
    assert "AAPL" in lines[0] and "bars.1s" in lines[0] and "snapshot" in lines[0]
    assert all(" O " in line and " C " in line for line in lines[1:]), lines


async def test_tail_stops_quietly_when_its_reader_goes_away(server: Server) -> None:
    """`tail --json | head -1`: the command ends with 0 and no traceback when the pipe closes."""
    proc = stockpush("tail", "--json", "--url", server.url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = await asyncio.to_thread(proc.stdout.readline)
    assert orjson.loads(first)["type"] == "snapshot"
    proc.stdout.close()
    await asyncio.to_thread(proc.wait, TIMEOUT)
    with proc.stderr:
        assert proc.stderr.read() == b""
    assert proc.returncode == 0


@pytest.mark.parametrize("command", ["tail", "watch"])
async def test_unreachable_server_is_one_clear_line_and_exit_1(command: str) -> None:
    """Nothing listening: one line on stderr saying so, nothing on stdout, exit code 1."""
    url = f"ws://127.0.0.1:{closed_port()}/v1/stream"
    proc = stockpush(command, "--url", url, "AAPL", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await finish(proc)
    assert proc.returncode == 1
    assert out == ""
    assert err == f"stockpush {command}: cannot connect to {url}: connection refused (is the server running?)\n"


async def test_unknown_symbol_is_a_clear_error(server: Server) -> None:
    """A symbol the server does not have: exit 1, naming it."""
    proc = stockpush("tail", "--url", server.url, "ZZZZ", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await finish(proc)
    assert proc.returncode == 1 and out == ""
    assert err.startswith("stockpush tail: the server refused: no symbol 'ZZZZ'") and err.count("\n") == 1


# --- watch ---------------------------------------------------------------------------------


def read_pty(fd: int, until: bytes, timeout: float = TIMEOUT) -> bytes:
    """Read a pseudo-terminal until `until` appears in what was read since the call."""
    data = b""
    deadline = time.monotonic() + timeout
    while until not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{until!r} did not appear; got {data[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize("no_color", [False, True])
async def test_watch_draws_a_live_table_in_a_terminal_and_quits_on_ctrl_c(server: Server, no_color: bool) -> None:
    """On a terminal: redrawn in place, with marks and colour (none with NO_COLOR); SIGINT quits cleanly."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {"NO_COLOR": "1"} if no_color else {}
    proc = stockpush("watch", "--url", server.url, "AAPL", "MSFT", env={**env, "TERM": "xterm"},
                     stdin=slave, stdout=slave, stderr=slave)  # fmt: skip
    os.close(slave)
    try:
        screen = await asyncio.to_thread(read_pty, master, b"latency")  # live events have arrived
        screen += await asyncio.to_thread(read_pty, master, b"latency")  # and one more frame
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, TIMEOUT)
        tail = await asyncio.to_thread(read_pty, master, b"\x1b[?25h")  # the cursor is given back
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0
    text = (screen + tail).decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert text.startswith(f"{ESC}[?25l")  # hidden while drawing
    assert f"\r{ESC}[4A" in text  # redrawn in place: header, two rows, footer
    assert "SYMBOL" in text and "VOLUME" in text
    frames = text.split(f"{ESC}[4A")
    last = frames[-2] if len(frames) > 2 else frames[-1]
    plain = [ANSI.sub("", line).strip() for line in last.splitlines()]
    rows = [line.split() for line in plain if line.startswith(("AAPL", "MSFT"))]
    assert len(rows) == 2 and all(len(row) >= 7 for row in rows), plain  # symbol, [mark], last, chg, %, bid, ask, vol
    assert any(mark in text for mark in ("▲", "▼"))
    colours = (GREEN in text) or (RED in text)
    assert colours is not no_color
    assert "live" in text


async def test_watch_to_a_pipe_prints_plain_tables(server: Server) -> None:
    """Not a terminal: no escape codes at all, a plain table per refresh; SIGINT still exits 0."""
    proc = stockpush("watch", "--url", server.url, "--refresh-ms", "100", "AAPL", stdout=subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while sum(line.startswith("AAPL ") for line in lines) < 2:
            lines.append((await asyncio.to_thread(proc.stdout.readline)).decode())
    proc.send_signal(signal.SIGINT)
    rest, _ = await finish(proc)
    assert proc.returncode == 0
    output = "".join(lines) + rest
    assert ESC not in output
    row = next(line for line in lines if line.startswith("AAPL "))
    assert len(row.split()) >= 7, row  # symbol, mark, last, change, %, bid, ask, volume


# --- rendering, pure -----------------------------------------------------------------------


def _snapshot(ch: str, **data: Any) -> SnapshotMessage:
    day = {"open": 100.0, "high": 101.0, "low": 99.0, "last": 100.5, "prev_close": 100.0, "volume": 1000,
           "price_decimals": 2, "status": "open"}  # fmt: skip
    return SnapshotMessage(
        type="snapshot", ch=ch, sym="AAPL", epoch="E", seq=3, ts=1, data=SnapshotData.model_validate({**day, **data})
    )


def test_board_folds_snapshots_trades_and_quotes() -> None:
    """Last, change, %, bid/ask and volume follow the events; the mark shows the last tick's direction."""
    board = Board(["AAPL"])
    board.apply(_snapshot("trades", price=100.5, size=100))
    board.apply(_snapshot("quotes", bid=100.4, bid_size=100, ask=100.6, ask_size=200))
    board.apply(TradeEvent(ch="trades", sym="AAPL", seq=4, ts=2, price=99.5, size=50))
    board.apply(QuoteEvent(ch="quotes", sym="AAPL", seq=4, ts=2, bid=99.4, bid_size=1, ask=99.6, ask_size=1))
    plain = render(board, [("footer", "")], color=False)
    assert plain[0].split() == ["SYMBOL", "LAST", "CHG", "CHG%", "BID", "ASK", "VOLUME"]
    assert plain[1].split() == ["AAPL", "▼", "99.50", "-0.50", "-0.50%", "99.40", "99.60", "1,050"]
    coloured = render(board, [("footer", "")], color=True)
    assert RED in coloured[1] and GREEN not in coloured[1]  # down on the tick and on the day
    assert render(board, [], color=False, arrows="^v")[1].split()[1] == "v"
    assert all(len(line) <= 30 for line in render(board, [("footer " * 10, "")], color=False, width=30))


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """wants_color: a TTY, no NO_COLOR, not TERM=dumb."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert wants_color(Terminal()) and not wants_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_color(Terminal())
    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_color(Terminal())
