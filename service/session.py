"""One client's protocol state: subscriptions, outbox, inbound limits. No I/O.

The endpoint feeds it frames and drains its outbox; the hub calls `deliver()`. Every answer
(ack, snapshot, error, ...) goes through the outbox, so what the client sees is exactly the
order in which the session decided it: that is what makes G2 and G3 hold.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable
from typing import Any

from service import protocol
from service.bus import ReplayRefused
from service.config import StreamSettings
from service.events import CHANNEL_KINDS, DEFAULT_CHANNELS, STATE_CHANNELS, Chunk, Event, StreamKey
from service.hub import Hub, Stream
from service.outbox import WIRE, Outbox, Put
from service.protocol import CloseCode, ErrorCode, ProtocolError, data_frame
from service.ratelimit import FloodDetector, TokenBucket

log = logging.getLogger(__name__)


class Fatal:
    """Why and how the connection must end: an `error` frame, then this close code."""

    __slots__ = ("code", "frame", "reason")

    def __init__(self, code: CloseCode, reason: str, frame: str | None) -> None:
        self.code = code
        self.reason = reason
        self.frame = frame


_SIZE = operator.attrgetter("size")


class _Throttle:
    """One throttled state stream of one client: at most one event per interval, the newest."""

    __slots__ = ("interval_ms", "last_seq", "next_ms", "pending")

    def __init__(self, interval_ms: int, last_seq: int) -> None:
        self.interval_ms = interval_ms
        self.last_seq = last_seq  # what the client saw last: the prev_seq of the next one
        self.next_ms = 0.0
        self.pending: Event | None = None


class Session:
    # One per connection: slots keep thousands of them small.
    __slots__ = ("_absorbing", "_bucket", "_clock", "_flood", "_grouped", "_held", "_on_fatal", "_throttles", "_wake",
                 "_write_now", "fatal", "group", "heartbeat_due", "hub", "inbox", "last_sent", "outbox", "peer",
                 "settings", "subscriptions")  # fmt: skip

    def __init__(
        self,
        hub: Hub,
        settings: StreamSettings,
        *,
        wake: Callable[[], None],
        on_fatal: Callable[[], None],
        clock: Callable[[], float],
        peer: str = "?",
        write_now: Callable[[str], bool] | None = None,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.peer = peer
        self.outbox = Outbox(settings.send_buffer_bytes, settings.max_batch_bytes)
        self.inbox: list[Chunk] = []  # appended to by the hub, drained by absorb()
        self.group = hub.join_group()  # when the pacer wakes it (service.pacer)
        self._grouped = True
        self.last_sent = time.monotonic()  # when the writer last sent a frame
        self.heartbeat_due = False
        self.subscriptions: dict[StreamKey, None] = {}
        self.fatal: Fatal | None = None
        self._wake = wake
        # Writes a frame onto the socket at once if it can take it (see poke); None: no such writer.
        self._write_now = write_now
        self._on_fatal = on_fatal
        self._clock = clock
        self._throttles: dict[StreamKey, _Throttle] = {}
        self._held: dict[StreamKey, _Throttle] = {}  # throttled streams with an event waiting
        self._absorbing = False  # delivering chunks event by event (see absorb)
        self._bucket = TokenBucket(settings.inbound_rate.per_s, settings.inbound_rate.burst, clock)
        self._flood = FloodDetector(settings.flood_close_after, 10.0, clock)

    # --- from the hub -------------------------------------------------------------------

    def absorb(self) -> None:
        """Move the chunks the hub handed over (see events.Chunk) into the outbox.

        The hub calls this once per client per turn of the event loop, with the turn's
        chunks sealed; while the pacer paces (the hub defers), `poke` does, once per beat.
        The common case, a client with room and no throttles, is one `extend` of shared
        chunks; everything else goes event by event.
        """
        inbox = self.inbox
        if not inbox:
            return
        if self.fatal is not None:
            inbox.clear()  # the connection is ending: nothing more goes out (see deliver)
            return
        outbox = self.outbox
        if not self._throttles and not outbox.conflating:
            size = sum(map(_SIZE, inbox))
            if outbox.bytes + size <= outbox.behind:
                outbox.extend(inbox, size)
                inbox.clear()
                self._wake()
                return
        chunks = inbox[:]
        inbox.clear()
        # A notice sent meanwhile (SLOW_CONSUMER) must not catch up out of turn: the
        # events it would take are newer than the rest of these chunks.
        self._absorbing = True
        try:
            for chunk in chunks:
                # A client that is behind, not throttled: each chunk whole, in one step,
                # unless its events may be conflated (or it would not fit).
                if (not self._throttles and not (outbox.conflating and chunk.key[0] in STATE_CHANNELS)
                        and self.fatal is None and self._put_chunk(chunk)):  # fmt: skip
                    continue
                for event in chunk.events:
                    self.deliver(event)
        finally:
            self._absorbing = False

    def _put_chunk(self, chunk: Chunk) -> bool:
        """Queue a chunk whole; False if it does not fit (the caller goes event by event)."""
        result = self.outbox.put_chunk(chunk)
        if result is Put.OVERFLOW:
            return False
        if result is Put.SLOW:
            self._slow_notice()
        self._wake()
        return True

    def _catch_up(self) -> None:
        """Take what the hub has for this client so far, out of turn: before an answer, a reset..."""
        if self._absorbing:
            return  # absorb() is delivering in order; what is newer follows it
        self.hub.seal()  # this turn's chunks end here and are handed over; later events go in new ones
        self.hub.release(self.group)  # and, while paced, those held for its wake group
        self.absorb()

    def deliver(self, event: Event) -> None:
        if self.fatal is not None:
            return
        if self._throttles:
            throttle = self._throttles.get(event.key)
            if throttle is not None:
                now_ms = self._clock() * 1000
                if throttle.pending is not None or now_ms < throttle.next_ms:
                    throttle.pending = event
                    if event.key not in self._held:
                        self._held[event.key] = throttle
                        self._wake()  # the writer arms its timer for the new deadline
                    return
                self._release(throttle, event, now_ms)
                return
        self._queue(event, None)

    def _release(self, throttle: _Throttle, event: Event, now_ms: float) -> None:
        prev = throttle.last_seq
        throttle.last_seq = event.seq
        throttle.next_ms = now_ms + throttle.interval_ms
        throttle.pending = None
        self._queue(event, prev)

    def flush_throttled(self) -> float | None:
        """Queue the held events that are due; return seconds until the next one is, if any."""
        if not self._held:
            return None
        now_ms = self._clock() * 1000
        next_due: float | None = None
        for key, throttle in list(self._held.items()):
            if throttle.pending is None:
                del self._held[key]
            elif now_ms >= throttle.next_ms:
                del self._held[key]
                self._release(throttle, throttle.pending, now_ms)
            elif next_due is None or throttle.next_ms < next_due:
                next_due = throttle.next_ms
        return None if next_due is None else (next_due - now_ms) / 1000

    def _queue(self, event: Event, prev: int | None) -> None:
        if self.fatal is not None:
            return
        result = self.outbox.put_event(event, event.ch in STATE_CHANNELS, prev)
        if result is Put.OVERFLOW:
            self._slow_consumer()
            return
        if result is Put.SLOW:
            self._slow_notice()
        self._wake()

    def _slow_notice(self) -> None:
        log.info("Client %s is slow: conflating its state channels", self.peer)
        self._send(
            protocol.notice(
                "SLOW_CONSUMER",
                "you are falling behind: state channels are conflated (see prev_seq)",
                buffered_bytes=self.outbox.bytes,
                limit_bytes=self.outbox.limit,
            )
        )

    def on_reset(self, stream: Stream, reason: str) -> None:
        if self.fatal is not None:
            return
        self._catch_up()  # the old epoch's events go out before the reset
        self.outbox.forget(stream.key)
        throttle = self._throttles.get(stream.key)
        if throttle is not None:
            throttle.pending, throttle.last_seq, throttle.next_ms = None, 0, 0.0
        self._send(protocol.reset(stream.ch, stream.sym, stream.epoch, reason))
        self._send(stream.snapshot(self.hub.now_ms()))
        self._wake()

    def on_removed(self, stream: Stream, reason: str) -> None:
        """The stream no longer exists: tell the client, and drop the subscription."""
        if self.fatal is not None:
            return
        self._catch_up()
        self.subscriptions.pop(stream.key, None)
        self.outbox.forget(stream.key)
        self._throttles.pop(stream.key, None)
        self._held.pop(stream.key, None)
        self._send(
            protocol.notice(
                "STREAM_REMOVED",
                f"{stream.ch}/{stream.sym} is no longer published ({reason}); its subscription ended",
                ch=stream.ch,
                sym=stream.sym,
            )
        )
        self._wake()

    def poke(self) -> None:
        """The pacer's beat: take what the hub handed over, and wake the writer if anything is queued.

        The common case, nothing else queued, no throttles, no conflation, a socket that
        takes frames, goes straight out as one frame written now: no trip through the
        outbox (its bounds would count the bytes in and straight back out) or the write
        scheduler. That is most frames at 1,000 clients, where frames fill the core.
        """
        inbox = self.inbox
        if inbox:
            outbox = self.outbox
            if (self._write_now is not None and not len(outbox) and self.fatal is None and not self._throttles
                    and not outbox.conflating):  # fmt: skip
                frame = data_frame(map(WIRE, inbox))
                if len(frame) <= outbox.batch_bytes and self._write_now(frame):
                    inbox.clear()
                    self.heartbeat_due = False
                    return
            self.absorb()  # wakes the writer for what it queues
        elif len(self.outbox):
            self._wake()

    def next_frame(self) -> tuple[str | None, float | None]:
        """The next frame to send, if any, and the seconds until a held throttled event is due.

        Data and control frames come first; a heartbeat only when nothing else is queued.
        """
        throttle_due = self.flush_throttled() if self._held else None
        frame = self.outbox.take_frame()
        if frame is None and self.heartbeat_due:
            frame = protocol.heartbeat(self.hub.now_ms())
        if frame is not None:
            self.heartbeat_due = False  # whatever goes out shows the connection is alive
        return frame, throttle_due

    def heartbeat_if_idle(self, now: float, heartbeat_s: float) -> None:
        """Called by the runtime's ticker: ask the writer for a heartbeat after a quiet spell."""
        if now - self.last_sent >= heartbeat_s and not self.heartbeat_due:
            self.heartbeat_due = True
            self._wake()

    def fail(self, reason: str) -> None:
        self._end(Fatal(CloseCode.INTERNAL_ERROR, reason, protocol.error(ErrorCode.INTERNAL, reason, fatal=True)))

    # --- from the client ----------------------------------------------------------------

    def hello(self) -> None:
        s = self.settings
        self._send(
            protocol.hello(
                server_ts=self.hub.now_ms(),
                heartbeat_ms=s.heartbeat_ms,
                limits={
                    "max_subscriptions": s.max_subscriptions,
                    "max_frame_bytes": s.max_frame_bytes,
                    "max_batch_bytes": s.max_batch_bytes,
                    "send_buffer_bytes": s.send_buffer_bytes,
                    "replay_window": s.replay_window,
                    "max_replay_bytes": s.max_replay_bytes,
                    "inbound_rate": {"per_s": s.inbound_rate.per_s, "burst": s.inbound_rate.burst},
                },
                channels=CHANNEL_KINDS,
                symbols=self.hub.symbols,
            )
        )
        self._wake()

    def on_text(self, text: str) -> None:
        if self.fatal is not None:
            return
        # Whatever the hub handed over so far precedes this request's answers, and a
        # resume must see it before purging the stream's queue.
        self._catch_up()
        wait_s = self._bucket.take()
        if wait_s:
            self._rate_limited(wait_s, protocol.peek_id(text))
        else:
            try:
                self._dispatch(protocol.parse_client_message(text))
            except ProtocolError as exc:
                self._send(protocol.error(exc.code, exc.message, id=exc.id, **exc.extra))
        self._wake()

    def on_binary(self) -> None:
        if self.fatal is not None:
            return
        wait_s = self._bucket.take()
        if wait_s:
            self._rate_limited(wait_s)
        else:
            self._send(protocol.error(ErrorCode.BAD_REQUEST, "binary frames are not supported; send JSON text"))
        self._wake()

    def detach(self) -> None:
        """Stop receiving events: the connection is ending."""
        for key in self.subscriptions:
            self.hub.detach(key, self)
        if self._grouped:  # detach runs again on close
            self._grouped = False
            self.hub.leave_group(self.group)
        self.inbox.clear()
        self.subscriptions.clear()
        self.fatal = self.fatal or Fatal(CloseCode.NORMAL, "", None)

    def close(self) -> None:
        self.detach()
        self.outbox.clear()

    # --- internals ----------------------------------------------------------------------

    def _send(self, frame: str) -> None:
        # Events the hub handed over before this answer go out before it (G2, G3).
        self._catch_up()
        # Once the connection is ending nothing more is queued: a snapshot must not go out
        # without the ack (or reset) that an overflow refused before it.
        if self.fatal is None and self.outbox.put_control(frame) is Put.OVERFLOW:
            self._slow_consumer()

    def _end(self, fatal: Fatal, *, drop_pending: bool = False) -> None:
        if self.fatal is None:
            self.fatal = fatal
            if drop_pending:
                self.outbox.clear()
            self._on_fatal()

    def _slow_consumer(self) -> None:
        if self.fatal is not None:
            return
        log.warning("Closing client %s: its outbox is full (%d bytes)", self.peer, self.outbox.limit)
        message = "outbox full: reconnect and resume from your last seq"
        self._end(
            Fatal(
                CloseCode.SLOW_CONSUMER,
                "slow consumer",
                protocol.error(ErrorCode.SLOW_CONSUMER, message, fatal=True, limit_bytes=self.outbox.limit),
            ),
            # The client is not reading: what is queued would never get through, and it
            # resumes from its last seq anyway.
            drop_pending=True,
        )

    def _rate_limited(self, wait_s: float, msg_id: protocol.MessageId | None = None) -> None:
        retry_after_ms = max(1, round(wait_s * 1000))
        if self._flood.hit():
            log.warning("Closing client %s: it keeps flooding past the rate limit", self.peer)
            frame = protocol.error(
                ErrorCode.RATE_LIMITED,
                "too many messages over the rate limit; back off before reconnecting",
                fatal=True,
                retry_after_ms=10_000,
            )
            self._end(Fatal(CloseCode.RATE_LIMITED, "rate limited", frame))
            return
        limit = self.settings.inbound_rate
        message = f"more than {limit.per_s:g} messages/s (burst {limit.burst}); this one was not processed"
        self._send(protocol.error(ErrorCode.RATE_LIMITED, message, id=msg_id, retry_after_ms=retry_after_ms))

    def _dispatch(self, msg: protocol.ClientMessage) -> None:
        if isinstance(msg, protocol.Subscribe):
            if msg.streams is not None:
                self._resume(msg)
            else:
                self._subscribe(msg)
        elif isinstance(msg, protocol.Unsubscribe):
            self._unsubscribe(msg)
        elif isinstance(msg, protocol.Subscriptions):
            self._ack("subscriptions", msg.id)
        else:
            self._send(protocol.pong(id=msg.id, client_ts=msg.client_ts, server_ts=self.hub.now_ms()))

    def _totals(self) -> dict[str, Any]:
        subs: dict[str, list[str]] = {}
        for ch, sym in self.subscriptions:
            subs.setdefault(ch, []).append(sym)
        for symbols in subs.values():
            symbols.sort()
        return {
            "subscriptions": subs,
            "count": len(self.subscriptions),
            "limit": self.settings.max_subscriptions,
        }

    def _expand(self, symbols: Iterable[str]) -> list[str]:
        out: dict[str, None] = {}
        for sym in symbols:
            if sym == "*":
                out.update(dict.fromkeys(self.hub.symbols))
            else:
                out[sym.upper()] = None
        return list(out)

    def _check_limit(self, msg_id: protocol.MessageId | None, new: int) -> None:
        limit = self.settings.max_subscriptions
        if len(self.subscriptions) + new > limit:
            raise ProtocolError(
                ErrorCode.SUBSCRIPTION_LIMIT,
                f"this would make {len(self.subscriptions) + new} subscriptions, more than the limit of "
                f"{limit}; nothing was changed",
                msg_id,
                count=len(self.subscriptions),
                limit=limit,
            )

    def _lookup(self, ch: str, sym: str, failed: list[dict[str, Any]]) -> Stream | None:
        if ch not in CHANNEL_KINDS:
            failed.append(
                {"ch": ch, "sym": sym, "code": ErrorCode.UNKNOWN_CHANNEL.value,
                 "message": f"no channel {ch!r}; channels are {', '.join(CHANNEL_KINDS)}"}
            )  # fmt: skip
            return None
        stream = self.hub.streams.get((ch, sym))
        if stream is None:
            failed.append(
                {"ch": ch, "sym": sym, "code": ErrorCode.UNKNOWN_SYMBOL.value, "message": f"no symbol {sym!r}"}
            )
        return stream

    def _subscribe(self, msg: protocol.Subscribe) -> None:
        channels = list(dict.fromkeys(msg.channels)) if msg.channels is not None else list(DEFAULT_CHANNELS)
        if not channels or not msg.symbols:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'channels' and 'symbols' must not be empty", msg.id)
        ok: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        new: list[Stream] = []
        for ch in channels:
            for sym in self._expand(msg.symbols):
                stream = self._lookup(ch, sym, failed)
                if stream is None:
                    continue
                ok.append(stream.position())
                if stream.key not in self.subscriptions:
                    new.append(stream)
        self._check_limit(msg.id, len(new))
        for stream in new:
            self.subscriptions[stream.key] = None
            self.hub.attach(stream.key, self)
            self._set_throttle(stream, msg.throttle_ms)
        self._ack("subscribe", msg.id, ok, failed)
        if msg.snapshot and self.fatal is None:
            now_ms = self.hub.now_ms()
            for stream in new:
                self._send(stream.snapshot(now_ms))

    def _resume(self, msg: protocol.Subscribe) -> None:
        assert msg.streams is not None
        ok: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        plan: list[tuple[Stream, list[Event] | None]] = []
        seen: set[StreamKey] = set()
        # What is replayed but not yet sent may not exceed max_replay_bytes per connection;
        # streams beyond the budget get a snapshot instead.
        budget = self.settings.max_replay_bytes - self.outbox.replay_bytes
        for pos in msg.streams:
            stream = self._lookup(pos.ch, pos.sym.upper(), failed)
            if stream is None:
                continue
            if stream.key in seen:
                failed.append({"ch": stream.ch, "sym": stream.sym, "code": ErrorCode.BAD_REQUEST.value,
                               "message": "stream listed twice; the first position counts"})  # fmt: skip
                continue
            seen.add(stream.key)
            entry = stream.position()
            events: list[Event] | None
            try:
                events = self.hub.bus.replay(stream.key, pos.epoch, pos.after_seq)
                size = sum(map(_SIZE, events))
                if size > budget:
                    raise ReplayRefused("REPLAY_TOO_LARGE")
                budget -= size
                entry.update(recovered=True, replayed=len(events))
            except ReplayRefused as refused:
                events = None
                entry.update(recovered=False, reason=refused.reason)
            ok.append(entry)
            plan.append((stream, events))
        self._check_limit(msg.id, sum(1 for stream, _ in plan if stream.key not in self.subscriptions))
        for stream, _ in plan:
            if stream.key in self.subscriptions:
                # Re-synchronising a live stream: what is still queued is replayed anyway.
                self.outbox.purge(stream.key)
            else:
                self.subscriptions[stream.key] = None
                self.hub.attach(stream.key, self)
            self._set_throttle(stream, msg.throttle_ms)
        self._ack("subscribe", msg.id, ok, failed)
        if self.fatal is not None:
            return
        now_ms = self.hub.now_ms()
        for stream, events in plan:
            if events is None:
                self._send(stream.snapshot(now_ms))
            elif events:
                self.outbox.put_replay(events)
        self._wake()

    def _set_throttle(self, stream: Stream, throttle_ms: int) -> None:
        """Throttle a state stream from its current seq (what the snapshot or replay ends at)."""
        self._held.pop(stream.key, None)
        if throttle_ms and stream.ch in STATE_CHANNELS:
            self._throttles[stream.key] = _Throttle(throttle_ms, stream.seq)
        else:
            self._throttles.pop(stream.key, None)

    def _unsubscribe(self, msg: protocol.Unsubscribe) -> None:
        if msg.all:
            keys = list(self.subscriptions)
            failed: list[dict[str, Any]] = []
        else:
            assert msg.symbols is not None
            if not msg.symbols or msg.channels == []:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "'channels' and 'symbols' must not be empty", msg.id)
            # Without channels: every channel the client has for those symbols.
            named = msg.channels is not None
            channels = list(dict.fromkeys(msg.channels)) if msg.channels is not None else list(CHANNEL_KINDS)
            keys, failed = [], []
            for sym in self._expand(msg.symbols):
                found = [(ch, sym) for ch in channels if (ch, sym) in self.subscriptions]
                keys += found
                if not named and not found:
                    failed.append(self._not_subscribed("*", sym))
                elif named:
                    for ch in channels:
                        if (ch, sym) not in self.subscriptions and self._lookup(ch, sym, failed) is not None:
                            failed.append(self._not_subscribed(ch, sym))
        for key in keys:
            del self.subscriptions[key]
            self.hub.detach(key, self)
            self.outbox.forget(key)
            self._throttles.pop(key, None)
            self._held.pop(key, None)
        self._ack("unsubscribe", msg.id, [{"ch": ch, "sym": sym} for ch, sym in keys], failed)

    @staticmethod
    def _not_subscribed(ch: str, sym: str) -> dict[str, Any]:
        return {"ch": ch, "sym": sym, "code": ErrorCode.NOT_SUBSCRIBED.value, "message": "not subscribed"}

    def _ack(
        self,
        op: str,
        msg_id: protocol.MessageId | None,
        ok: list[Any] | None = None,
        failed: list[Any] | None = None,
    ) -> None:
        body: dict[str, Any] = {"type": "ack"}
        if msg_id is not None:
            body["id"] = msg_id
        body.update(op=op, server_ts=self.hub.now_ms())
        if ok is not None:
            body.update(ok=ok, failed=failed or [])
        body.update(self._totals())
        self._send(protocol.encode(body))
