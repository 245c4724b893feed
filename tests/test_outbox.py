"""The per-client outbox: ordering, batching, the byte bound and state-channel conflation."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson

from service.events import QUOTES, TRADES, Chunk, Event, StreamKey
from service.outbox import Outbox, Put

LIMIT = 4096
BATCH = 1024
DATA_PREFIX = '{"type":"data","events":['


def event(ch: str, sym: str, seq: int, pad: int = 0) -> Event:
    """An event encoded the way the sequencer encodes it; `pad` makes it bigger."""
    fields: dict[str, Any] = {"price": 10.5, "size": 100} if ch == TRADES else {"bid": 10.5, "ask": 10.51}
    if pad:
        fields["note"] = "x" * pad
    wire = orjson.dumps({"ch": ch, "sym": sym, "seq": seq, "ts": 1000 + seq, **fields}).decode()
    return Event(ch, sym, "E1", seq, 1000 + seq, fields, {}, wire)


def drain(outbox: Outbox) -> list[dict[str, Any]]:
    frames = []
    while (frame := outbox.take_frame()) is not None:
        frames.append(json.loads(frame))
    return frames


def events_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for f in frames if f["type"] == "data" for e in f["events"]]


class Client:
    """Applies the G1/G5 rule to what it receives: seq == last + 1, or prev_seq == last."""

    def __init__(self) -> None:
        self.last: dict[StreamKey, int] = {}
        self.received: dict[StreamKey, list[int]] = {}

    def apply(self, frame: dict[str, Any]) -> None:
        for e in frame.get("events", []) if frame["type"] == "data" else []:
            key = (e["ch"], e["sym"])
            last = self.last.get(key, 0)
            assert e["seq"] == last + 1 or e.get("prev_seq") == last, f"gap or repeat on {key}: {last} -> {e}"
            if e["ch"] == TRADES:
                assert "prev_seq" not in e, "a trade was conflated"
            self.last[key] = e["seq"]
            self.received.setdefault(key, []).append(e["seq"])


def fill_to_slow(outbox: Outbox, sym: str = "FILL") -> int:
    """Queue trades until the outbox reports SLOW; return how many were queued."""
    for seq in range(1, 10_000):
        result = outbox.put_event(event(TRADES, sym, seq, pad=40), state=False)
        if result is Put.SLOW:
            return seq
        assert result is Put.OK
    raise AssertionError("never became slow")


# --- ordering and batching -----------------------------------------------------------------


def test_control_frames_and_events_keep_their_order() -> None:
    """Control frames go out alone; the events between them go out as one data frame, in order."""
    outbox = Outbox(LIMIT, BATCH)
    outbox.put_control('{"type":"ack","n":1}')
    outbox.put_event(event(TRADES, "A", 1), state=False)
    outbox.put_event(event(QUOTES, "B", 1), state=True)
    outbox.put_control('{"type":"snapshot","n":2}')
    outbox.put_event(event(TRADES, "A", 2), state=False)
    frames = drain(outbox)
    assert [f["type"] for f in frames] == ["ack", "data", "snapshot", "data"]
    assert [(e["ch"], e["sym"], e["seq"]) for e in frames[1]["events"]] == [(TRADES, "A", 1), (QUOTES, "B", 1)]
    assert [e["seq"] for e in frames[3]["events"]] == [2]
    assert outbox.take_frame() is None
    assert outbox.bytes == 0
    assert len(outbox) == 0


def test_consecutive_events_are_batched_and_split_at_the_batch_size() -> None:
    """Many pending events go out in as few frames as the batch size allows, none lost or reordered."""
    outbox = Outbox(1 << 20, BATCH)
    events = [event(TRADES, "A", seq, pad=seq % 37) for seq in range(1, 101)]
    for e in events:
        outbox.put_event(e, state=False)
    frames = []
    while (frame := outbox.take_frame()) is not None:
        frames.append(frame)
    decoded = [json.loads(f) for f in frames]
    assert [e["seq"] for e in events_of(decoded)] == list(range(1, 101))
    assert sum(len(e.wire) for e in events) // BATCH <= len(frames) < len(events)
    # Greedy: each frame but the last was cut only because the next event would not fit.
    taken = 0
    for frame, body in zip(frames[:-1], decoded[:-1], strict=True):
        taken += len(body["events"])
        assert len(frame) + 1 + len(events[taken].wire) > BATCH


def test_data_frame_never_exceeds_max_batch_bytes() -> None:
    """A data frame of events that each fit is never longer than max_batch_bytes, envelope included."""
    outbox = Outbox(1 << 20, BATCH)
    for seq in range(1, 200):
        outbox.put_event(event(TRADES, "A", seq, pad=seq % 53), state=False)
    while (frame := outbox.take_frame()) is not None:
        assert frame.startswith(DATA_PREFIX)
        assert len(frame) <= BATCH, f"data frame of {len(frame)} bytes > max_batch_bytes {BATCH}"


def test_an_event_larger_than_the_batch_goes_alone() -> None:
    """An event bigger than max_batch_bytes is still sent, alone in its frame."""
    outbox = Outbox(LIMIT, BATCH)
    outbox.put_event(event(TRADES, "A", 1, pad=BATCH + 10), state=False)
    outbox.put_event(event(TRADES, "A", 2), state=False)
    first, second = drain(outbox)
    assert [e["seq"] for e in first["events"]] == [1]
    assert [e["seq"] for e in second["events"]] == [2]


# --- the byte bound and the slow-consumer ladder ------------------------------------------


def test_bytes_count_queued_json_text() -> None:
    """The outbox counts the bytes of what is queued and gives them back as frames leave."""
    outbox = Outbox(LIMIT, BATCH)
    e1, e2 = event(TRADES, "A", 1), event(QUOTES, "A", 1)
    outbox.put_control('{"type":"ack"}')
    outbox.put_event(e1, state=False)
    outbox.put_event(e2, state=True)
    assert outbox.bytes == len('{"type":"ack"}') + len(e1.wire) + len(e2.wire)
    outbox.take_frame()
    assert outbox.bytes == len(e1.wire) + len(e2.wire)
    outbox.take_frame()
    assert outbox.bytes == 0


def test_crossing_half_returns_slow_once() -> None:
    """The event that takes the outbox past half of its limit returns SLOW; the next ones do not."""
    outbox = Outbox(LIMIT, BATCH)
    queued = fill_to_slow(outbox)
    assert outbox.conflating
    assert outbox.bytes > LIMIT // 2
    assert outbox.bytes - len(event(TRADES, "FILL", queued, pad=40).wire) <= LIMIT // 2
    assert outbox.put_event(event(TRADES, "FILL", queued + 1, pad=40), state=False) is Put.OK


def test_conflation_keeps_one_pending_event_with_prev_seq() -> None:
    """While conflating, a state stream keeps one pending event: the newest, with prev_seq of what was sent."""
    outbox = Outbox(LIMIT, BATCH)
    outbox.put_event(event(QUOTES, "Q", 1), state=True)
    outbox.put_event(event(QUOTES, "Q", 2), state=True)
    fill_to_slow(outbox)
    entries_before = len(outbox)
    for seq in range(3, 13):
        assert outbox.put_event(event(QUOTES, "Q", seq), state=True) is Put.OK
    assert len(outbox) == entries_before + 1
    assert outbox.conflated == 9  # seq 4..12 each replaced the one before
    quotes = [e for e in events_of(drain(outbox)) if e["ch"] == QUOTES]
    assert [e["seq"] for e in quotes] == [1, 2, 12]
    assert quotes[-1]["prev_seq"] == 2
    assert "prev_seq" not in quotes[0]
    assert "prev_seq" not in quotes[1]


def test_first_conflated_event_needs_no_prev_seq() -> None:
    """A conflated stream's first pending event follows the last queued one, so it carries no prev_seq."""
    outbox = Outbox(LIMIT, BATCH)
    outbox.put_event(event(QUOTES, "Q", 1), state=True)
    fill_to_slow(outbox)
    outbox.put_event(event(QUOTES, "Q", 2), state=True)
    quotes = [e for e in events_of(drain(outbox)) if e["ch"] == QUOTES]
    assert quotes == [json.loads(event(QUOTES, "Q", 1).wire), json.loads(event(QUOTES, "Q", 2).wire)]


def test_prev_seq_follows_what_was_already_sent() -> None:
    """After a pending event was sent, the stream's next jump carries prev_seq of that event."""
    outbox = Outbox(LIMIT, BATCH)
    fill_to_slow(outbox)
    for seq in range(1, 5):
        outbox.put_event(event(QUOTES, "Q", seq), state=True)
    for seq in range(1, 15):  # enough behind the quote to stay above a quarter once it is sent
        outbox.put_event(event(TRADES, "BEHIND", seq, pad=40), state=False)
    client = Client()
    while (QUOTES, "Q") not in client.last:
        client.apply(json.loads(outbox.take_frame() or '{"type":"none"}'))
    assert client.received[(QUOTES, "Q")] == [4]
    assert outbox.conflating
    for seq in range(5, 9):
        outbox.put_event(event(QUOTES, "Q", seq), state=True)
    frames = drain(outbox)
    for frame in frames:
        client.apply(frame)
    assert client.received[(QUOTES, "Q")] == [4, 8]
    last_quote = [e for e in events_of(frames) if e["ch"] == QUOTES][-1]
    assert last_quote["prev_seq"] == 4


def test_client_rule_never_sees_a_gap_or_repeat() -> None:
    """Under random publish/drain interleavings, a client applying the prev_seq rule never sees a gap or repeat."""
    slow_runs = completed_runs = conflated = 0
    for trial in range(20):
        rng = random.Random(trial)
        outbox = Outbox(LIMIT, BATCH)
        client = Client()
        published: dict[StreamKey, int] = {}
        for _ in range(1000):
            if rng.random() < 0.75:
                ch = rng.choice((QUOTES, QUOTES, QUOTES, TRADES))
                key = (ch, rng.choice("ABC"))
                published[key] = published.get(key, 0) + 1
                result = outbox.put_event(event(ch, key[1], published[key], rng.randint(0, 60)), state=ch == QUOTES)
                if result is Put.OVERFLOW:
                    break
                slow_runs += result is Put.SLOW
            elif rng.random() < 0.1:
                outbox.put_control('{"type":"notice"}')
            elif (frame := outbox.take_frame()) is not None:
                client.apply(json.loads(frame))
        else:
            for frame in drain(outbox):
                client.apply(frame)
            # Fully drained: every stream ends on its newest event; trades arrived one by one.
            assert client.last == published
            for key, seqs in client.received.items():
                if key[0] == TRADES:
                    assert seqs == list(range(1, published[key] + 1))
            completed_runs += 1
        conflated += outbox.conflated
    # The interleavings really exercised conflation, and most runs drained to the end.
    assert slow_runs > 0
    assert conflated > 0
    assert completed_runs > 10


def test_trades_are_never_conflated_and_overflow() -> None:
    """Trades keep every event while conflating; when the limit is reached put returns OVERFLOW."""
    outbox = Outbox(LIMIT, BATCH)
    queued = fill_to_slow(outbox, sym="T")
    result = Put.OK
    seq = queued
    while result is not Put.OVERFLOW:
        seq += 1
        before = outbox.bytes
        result = outbox.put_event(event(TRADES, "T", seq, pad=40), state=False)
    assert outbox.bytes == before  # the refused event was not queued
    assert before + len(event(TRADES, "T", seq, pad=40).wire) > LIMIT
    trades = [e["seq"] for e in events_of(drain(outbox))]
    assert trades == list(range(1, seq))
    assert outbox.conflated == 0


def test_conflated_state_event_overflows_when_full() -> None:
    """A new pending state event that does not fit returns OVERFLOW too."""
    outbox = Outbox(LIMIT, BATCH)
    fill_to_slow(outbox)
    seq = 1000
    while outbox.put_event(event(TRADES, "FILL", seq, pad=40), state=False) is Put.OK:
        seq += 1
    big_quote = event(QUOTES, "Q", 1, pad=LIMIT - outbox.bytes)
    assert outbox.put_event(big_quote, state=True) is Put.OVERFLOW


def test_control_frame_overflow() -> None:
    """A control frame that does not fit returns OVERFLOW and is not queued."""
    outbox = Outbox(LIMIT, BATCH)
    assert outbox.put_control("x" * LIMIT) is Put.OK
    assert outbox.put_control("y") is Put.OVERFLOW
    assert outbox.bytes == LIMIT
    assert len(outbox) == 1


def test_conflation_ends_at_a_quarter() -> None:
    """Draining to a quarter of the limit ends conflation: state events queue one by one again."""
    outbox = Outbox(LIMIT, BATCH)
    fill_to_slow(outbox)
    outbox.put_event(event(QUOTES, "Q", 1), state=True)
    outbox.put_event(event(QUOTES, "Q", 2), state=True)
    client = Client()
    while outbox.conflating:
        frame = outbox.take_frame()
        assert frame is not None
        client.apply(json.loads(frame))
    assert outbox.bytes <= LIMIT // 4
    entries = len(outbox)
    for seq in (3, 4, 5):
        assert outbox.put_event(event(QUOTES, "Q", seq), state=True) is Put.OK
    assert len(outbox) == entries + 3
    for frame in drain(outbox):
        client.apply(frame)
    assert client.received[(QUOTES, "Q")][-3:] == [3, 4, 5]
    assert client.last[(QUOTES, "Q")] == 5


def test_conflation_starts_again_after_ending() -> None:
    """After catching up, crossing half again returns SLOW again."""
    outbox = Outbox(LIMIT, BATCH)
    fill_to_slow(outbox, sym="F1")
    drain(outbox)
    assert not outbox.conflating
    fill_to_slow(outbox, sym="F2")
    assert outbox.conflating


# --- purge, forget, replay -----------------------------------------------------------------


def test_purge_drops_one_stream_and_recounts_bytes() -> None:
    """purge removes every queued event of one stream and only those; bytes match what is left."""
    outbox = Outbox(LIMIT, BATCH)
    kept = []
    for seq in range(1, 4):
        outbox.put_event(event(TRADES, "A", seq), state=False)
        keep = event(TRADES, "B", seq)
        outbox.put_event(keep, state=False)
        kept.append(keep)
    outbox.put_control('{"type":"ack"}')
    outbox.purge((TRADES, "A"))
    assert outbox.bytes == sum(len(e.wire) for e in kept) + len('{"type":"ack"}')
    frames = drain(outbox)
    assert [(e["sym"], e["seq"]) for e in events_of(frames)] == [("B", 1), ("B", 2), ("B", 3)]
    assert frames[-1]["type"] == "ack"


def test_purge_while_conflating_stops_replacing() -> None:
    """After purge, a stream's next event gets a fresh entry instead of reviving the purged one."""
    outbox = Outbox(LIMIT, BATCH)
    fill_to_slow(outbox)
    outbox.put_event(event(QUOTES, "Q", 5), state=True)
    outbox.purge((QUOTES, "Q"))
    outbox.put_event(event(QUOTES, "Q", 9), state=True)
    quotes = [e for e in events_of(drain(outbox)) if e["ch"] == QUOTES]
    assert [e["seq"] for e in quotes] == [9]


def test_forget_keeps_the_queued_event_but_stops_conflating_into_it() -> None:
    """forget leaves the pending event queued; the stream's next event is queued after it, not merged."""
    outbox = Outbox(LIMIT, BATCH)
    fill_to_slow(outbox)
    outbox.put_event(event(QUOTES, "Q", 1), state=True)
    outbox.put_event(event(QUOTES, "Q", 2), state=True)  # replaces #1 in place
    outbox.forget((QUOTES, "Q"))
    outbox.put_control('{"type":"ack"}')
    outbox.put_event(event(QUOTES, "Q", 3), state=True)
    frames = drain(outbox)
    types = [f["type"] for f in frames]
    ack_at = types.index("ack")
    before = [e["seq"] for e in events_of(frames[:ack_at]) if e["ch"] == QUOTES]
    after = [e["seq"] for e in events_of(frames[ack_at:]) if e["ch"] == QUOTES]
    assert before == [2]
    assert after == [3]


def test_replayed_events_are_not_counted() -> None:
    """Replayed events cost no bytes against the limit, and still go out in order."""
    outbox = Outbox(LIMIT, BATCH)
    replay = [event(TRADES, "A", seq, pad=100) for seq in range(1, 101)]
    assert sum(len(e.wire) for e in replay) > LIMIT
    outbox.put_replay(replay)
    assert outbox.bytes == 0
    assert not outbox.conflating
    live = event(TRADES, "A", 101)
    assert outbox.put_event(live, state=False) is Put.OK
    assert outbox.bytes == len(live.wire)
    seqs = [e["seq"] for e in events_of(drain(outbox))]
    assert seqs == list(range(1, 102))
    assert outbox.bytes == 0


def test_clear_empties_everything() -> None:
    """clear drops every frame and resets the byte count."""
    outbox = Outbox(LIMIT, BATCH)
    fill_to_slow(outbox)
    outbox.put_event(event(QUOTES, "Q", 1), state=True)
    outbox.clear()
    assert outbox.bytes == 0
    assert len(outbox) == 0
    assert outbox.take_frame() is None


def chunk_of(events: list[Event]) -> Chunk:
    chunk = Chunk(events[0])
    chunk.events.extend(events[1:])
    chunk.seal()
    return chunk


def test_chunks_bigger_than_a_frame_are_split_and_never_changed() -> None:
    """A shared chunk past max_batch_bytes goes out over several frames, each within the bound."""
    outbox = Outbox(LIMIT * 4, BATCH)
    big = chunk_of([event(TRADES, "AAPL", seq) for seq in range(1, 41)])
    small = chunk_of([event(TRADES, "MSFT", seq) for seq in range(1, 4)])
    assert big.size > 2 * BATCH
    wire_before = big.wire
    outbox.put_control('{"type":"ack"}')
    outbox.extend([big, small], big.size + small.size)
    raw: list[str] = []
    while (frame := outbox.take_frame()) is not None:
        raw.append(frame)
    assert raw[0] == '{"type":"ack"}'
    assert len(raw) > 3
    assert all(len(frame) <= BATCH for frame in raw)
    got = [(e["sym"], e["seq"]) for e in events_of([json.loads(frame) for frame in raw])]
    assert got == [("AAPL", seq) for seq in range(1, 41)] + [("MSFT", seq) for seq in range(1, 4)]
    assert outbox.bytes == 0
    assert big.wire == wire_before and len(big.events) == 40  # other connections still hold it


def test_a_client_behind_holds_no_objects_the_garbage_collector_walks() -> None:
    """Past `behind` bytes, queued events are plain tuples the collector stops tracking; order and bounds hold.

    Queued as shared Event objects (a tuple subclass, never untracked), tens of thousands of
    them made every full collection of the server walk a stalled client's outbox.
    """
    import gc

    outbox = Outbox(64 * 1024, BATCH)
    assert outbox.behind == 4 * BATCH
    queued = [event(TRADES, "A" if seq % 3 else "B", seq) for seq in range(1, 400)]
    for e in queued:
        assert outbox.put_event(e, state=False) is Put.OK
    assert outbox.bytes == sum(e.size for e in queued)
    gc.collect()
    tracked = [gc.is_tracked(item) for item in outbox._items]
    assert tracked[0] and not tracked[-1]  # shared events at first, untracked entries once behind
    assert sum(tracked) * 60 < outbox.behind + 200
    outbox.purge((TRADES, "B"))
    kept = [e for e in queued if e.sym == "A"]
    assert outbox.bytes == sum(e.size for e in kept)
    frames = drain(outbox)
    assert [e["seq"] for e in events_of(frames)] == [e.seq for e in kept]
    assert all(len(json.dumps(f, separators=(",", ":"))) <= BATCH for f in frames)
    assert outbox.bytes == 0 and len(outbox) == 0


def test_a_chunk_queued_whole_is_one_untracked_item_within_the_bounds() -> None:
    """put_chunk: one plain item per chunk, counted in bytes, SLOW past half, OVERFLOW queues nothing."""
    import gc

    outbox = Outbox(8 * BATCH, 4 * BATCH)
    chunks = [chunk_of([event(TRADES, "AAPL", seq) for seq in range(n, n + 5)]) for n in range(1, 200, 5)]
    results = []
    for chunk in chunks:
        results.append(outbox.put_chunk(chunk))
        if results[-1] is Put.OVERFLOW:
            break
    assert results.count(Put.SLOW) == 1 and outbox.conflating
    assert results[-1] is Put.OVERFLOW  # the limit, with nothing of the last chunk queued
    queued = chunks[: len(results) - 1]
    assert outbox.bytes == sum(c.size for c in queued) <= outbox.limit
    assert len(outbox) == len(queued)
    # A tuple is untracked when a collection finds only untracked items in it: the key of
    # this test's events is one of theirs, untracked in the same pass, so at the second.
    gc.collect()
    gc.collect()
    assert not any(gc.is_tracked(item) for item in outbox._items)  # holds no chunk or event alive
    frames = drain(outbox)
    assert [e["seq"] for e in events_of(frames)] == [e.seq for c in queued for e in c.events]
    assert all(len(json.dumps(f, separators=(",", ":"))) <= 4 * BATCH for f in frames)
    assert outbox.bytes == 0
