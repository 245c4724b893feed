// One WebSocket client of /v1/stream: subscriptions, resume, reconnect with backoff, and the
// per-stream sequence check. It speaks only the documented protocol (docs/protocol.md).

import { GAP, OK, SequenceTracker, streamKey } from "./sequence.js";

export const CONNECTING = "connecting";
export const LIVE = "live";
export const RECONNECTING = "reconnecting";
export const OFFLINE = "offline";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const STABLE_AFTER_MS = 5_000; // live this long: the next failure starts the backoff afresh
const WATCHDOG_MIN_MS = 2_000; // silence longer than max(this, 3 heartbeats) means a dead socket
const RESUME_CHUNK = 300; // streams per resume request: keeps a frame well under max_frame_bytes
// Resume trades first: a snapshot of another channel carries day statistics as of "now", so
// it must come after any replayed trades of the same symbol, never before them.
const RESUME_ORDER = ["trades", "status", "quotes", "bars.1s", "bars.1m"];

/** What a close code asks for (docs/protocol.md section 9): give up, come back now, or back off. */
function closeBand(code) {
  if (code >= 4000 && code <= 4099) return "fatal";
  if (code >= 4100 && code <= 4199) return "now";
  return "backoff"; // 4200-4299, 1012, 1013, 1011, 1006 and anything unknown
}

export class Connection {
  /**
   * @param {object} options
   * @param {string} options.url  ws:// or wss:// URL of /v1/stream
   * @param {number} options.throttleMs  sent with every subscribe (state channels only)
   * @param {object} options.on  callbacks: hello, snapshot, event, reset, failed, lost, error, notice, state
   */
  constructor({ url, throttleMs = 0, on }) {
    this.url = url;
    this.throttleMs = throttleMs;
    this.on = on;
    this.tracker = new SequenceTracker();
    this.wanted = new Map(); // key -> {ch, sym}: what the page wants, across sockets
    this.subscribed = new Set(); // keys requested on the current socket
    this.pending = new Map(); // request id -> {keys}
    this.ws = null;
    this.helloDone = false;
    this.state = null;
    this.attempt = 0;
    this.nextId = 1;
    this.retryAfterMs = null;
    this.heartbeatMs = 5_000;
    this.lastMessageAt = 0;
    this.lastImmediateAt = -Infinity;
    this.serverOffsetMs = 0;
    this.retryTimer = 0;
    this.stableTimer = 0;
    this.syncQueued = false;
    this.stats = {
      connects: 0,
      messages: 0,
      bad: 0,
      snapshots: 0,
      resets: 0,
      recovered: 0,
      notRecovered: 0,
      replayed: 0,
      reasons: [],
      closes: [],
      states: [],
      watchdog: 0,
    };
    setInterval(() => this.watchdog(), 1_000);
    addEventListener("online", () => {
      if (this.state === OFFLINE && !this.fatal) this.open();
    });
  }

  start() {
    this.setState(CONNECTING);
    this.open();
  }

  /** After a fatal close: the user asks to try again. */
  reconnectNow() {
    this.fatal = false;
    this.attempt = 0;
    if (this.ws) return;
    this.setState(RECONNECTING, { until: null });
    this.open();
  }

  /** Server time estimate (Unix ms), from hello and heartbeats. */
  now() {
    return Date.now() + this.serverOffsetMs;
  }

  want(channels, symbols) {
    for (const ch of channels) {
      for (const sym of symbols) {
        const key = streamKey(ch, sym);
        if (!this.wanted.has(key)) this.wanted.set(key, { ch, sym });
      }
    }
    this.queueSync();
  }

  unwant(channels, symbols) {
    const byChannel = new Map();
    for (const ch of channels) {
      for (const sym of symbols) {
        const key = streamKey(ch, sym);
        if (!this.wanted.delete(key)) continue;
        this.tracker.forget(ch, sym);
        if (this.subscribed.delete(key)) {
          if (!byChannel.has(ch)) byChannel.set(ch, []);
          byChannel.get(ch).push(sym);
        }
      }
    }
    for (const [ch, syms] of byChannel) this.send({ op: "unsubscribe", channels: [ch], symbols: syms });
  }

  isWanted(ch, sym) {
    return this.wanted.has(streamKey(ch, sym));
  }

  // --- socket lifecycle ----------------------------------------------------------------

  open() {
    clearTimeout(this.retryTimer);
    if (this.ws) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.stats.connects += 1;
    this.lastMessageAt = performance.now();
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.closed(ev.code, ev.reason);
    };
  }

  closed(code, reason) {
    this.ws = null;
    this.helloDone = false;
    this.subscribed.clear();
    this.pending.clear();
    clearTimeout(this.stableTimer);
    this.stats.closes.push({ code, reason });
    if (this.stats.closes.length > 50) this.stats.closes.shift();
    const band = closeBand(code);
    if (band === "fatal") {
      this.fatal = true;
      this.setState(OFFLINE, { code, reason, fatal: true });
      return;
    }
    let delay;
    const now = performance.now();
    if (band === "now" && now - this.lastImmediateAt > 1_000) {
      this.lastImmediateAt = now;
      delay = Math.random() * 100;
    } else {
      this.attempt += 1;
      const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.attempt - 1));
      delay = ceiling / 2 + (Math.random() * ceiling) / 2; // "equal jitter": never 0, never in step
    }
    if (this.retryAfterMs) delay = Math.max(delay, this.retryAfterMs); // never before retry_after_ms
    this.retryAfterMs = null;
    if (!navigator.onLine) {
      this.setState(OFFLINE, { network: true });
      return;
    }
    this.setState(RECONNECTING, { until: Date.now() + delay, code });
    this.retryTimer = setTimeout(() => {
      this.setState(RECONNECTING, { until: null, code });
      this.open();
    }, delay);
  }

  watchdog() {
    if (!this.ws) return;
    const limit = Math.max(WATCHDOG_MIN_MS, 3 * this.heartbeatMs);
    if (performance.now() - this.lastMessageAt <= limit) return;
    // Heartbeats stopped: the socket is dead even if TCP has not noticed. Drop it now
    // rather than wait for a closing handshake that may never finish.
    this.stats.watchdog += 1;
    const ws = this.ws;
    this.ws = null;
    ws.onmessage = ws.onclose = null;
    ws.close();
    this.closed(1006, `no message for ${Math.round(limit)} ms`);
  }

  setState(state, detail = {}) {
    if (state === this.state && state !== RECONNECTING) return;
    this.state = state;
    this.stats.states.push({ state, t: Math.round(performance.now()) });
    if (this.stats.states.length > 200) this.stats.states.shift();
    this.on.state?.(state, detail);
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.helloDone) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  request(message, keys) {
    const id = this.nextId++;
    message.id = id;
    if (this.throttleMs) message.throttle_ms = this.throttleMs;
    if (this.send(message)) this.pending.set(id, { keys });
  }

  queueSync() {
    if (this.syncQueued) return;
    this.syncQueued = true;
    queueMicrotask(() => {
      this.syncQueued = false;
      if (this.helloDone) this.sync();
    });
  }

  /** Subscribe to every wanted stream not yet requested on this socket: resume what we can. */
  sync() {
    const resume = [];
    const fresh = new Map(); // sym -> [ch]
    for (const [key, { ch, sym }] of this.wanted) {
      if (this.subscribed.has(key)) continue;
      this.subscribed.add(key);
      const position = this.tracker.position(ch, sym);
      if (position) {
        resume.push(position);
      } else {
        if (!fresh.has(sym)) fresh.set(sym, []);
        fresh.get(sym).push(ch);
      }
    }
    const rank = (ch) => {
      const i = RESUME_ORDER.indexOf(ch);
      return i < 0 ? RESUME_ORDER.length : i;
    };
    resume.sort((a, b) => rank(a.ch) - rank(b.ch));
    for (let i = 0; i < resume.length; i += RESUME_CHUNK) {
      const chunk = resume.slice(i, i + RESUME_CHUNK);
      this.request({ op: "subscribe", streams: chunk }, chunk.map((p) => streamKey(p.ch, p.sym)));
    }
    // Symbols that want the same channels go in one request.
    const groups = new Map();
    for (const [sym, channels] of fresh) {
      const id = channels.join(",");
      if (!groups.has(id)) groups.set(id, { channels, symbols: [] });
      groups.get(id).symbols.push(sym);
    }
    for (const { channels, symbols } of groups.values()) {
      const keys = channels.flatMap((ch) => symbols.map((sym) => streamKey(ch, sym)));
      this.request({ op: "subscribe", channels, symbols }, keys);
    }
    this.maybeLive();
  }

  maybeLive() {
    if (this.helloDone && this.pending.size === 0 && this.state !== LIVE) {
      this.setState(LIVE);
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, STABLE_AFTER_MS);
    }
  }

  // --- inbound -------------------------------------------------------------------------

  /** Handle one server frame (a JSON string, or an already parsed object from the test hook). */
  receive(raw) {
    let m = raw;
    if (typeof raw === "string") {
      try {
        m = JSON.parse(raw);
      } catch {
        this.stats.bad += 1;
        return;
      }
    }
    if (!m || typeof m !== "object" || typeof m.type !== "string") {
      this.stats.bad += 1;
      return;
    }
    this.lastMessageAt = performance.now();
    this.stats.messages += 1;
    try {
      this.dispatch(m);
    } catch (err) {
      this.stats.bad += 1;
      console.error("stockpush: could not handle a server message", err);
    }
  }

  dispatch(m) {
    switch (m.type) {
      case "hello":
        return this.onHello(m);
      case "ack":
        return this.onAck(m);
      case "snapshot":
        if (!this.isWanted(m.ch, m.sym)) return undefined;
        this.tracker.snapshot(m.ch, m.sym, m.epoch, m.seq);
        this.stats.snapshots += 1;
        return this.on.snapshot?.(m);
      case "data":
        return this.onData(m);
      case "reset":
        if (!this.isWanted(m.ch, m.sym)) return undefined;
        this.tracker.expectSnapshot(m.ch, m.sym, m.epoch);
        this.stats.resets += 1;
        return this.on.reset?.(m);
      case "heartbeat":
        if (Number.isFinite(m.server_ts)) this.serverOffsetMs = m.server_ts - Date.now();
        return undefined;
      case "error":
        return this.onError(m);
      case "notice":
        return this.on.notice?.(m);
      default:
        return undefined; // pong, and anything newer than this page
    }
  }

  onHello(m) {
    this.heartbeatMs = Number.isFinite(m.heartbeat_ms) ? m.heartbeat_ms : 5_000;
    if (Number.isFinite(m.server_ts)) this.serverOffsetMs = m.server_ts - Date.now();
    this.limits = m.limits && typeof m.limits === "object" ? m.limits : {};
    this.symbols = Array.isArray(m.symbols) ? m.symbols.filter((s) => typeof s === "string") : [];
    this.subscribed.clear();
    this.pending.clear();
    this.helloDone = true;
    this.on.hello?.(this.symbols, m); // may want/unwant streams before the first sync
    this.sync();
  }

  onAck(m) {
    const request = this.pending.get(m.id);
    this.pending.delete(m.id);
    if (m.op === "subscribe" && request) {
      for (const entry of Array.isArray(m.ok) ? m.ok : []) {
        if (!this.isWanted(entry.ch, entry.sym)) continue;
        if (!("recovered" in entry)) {
          this.tracker.expectSnapshot(entry.ch, entry.sym, entry.epoch);
        } else if (entry.recovered) {
          this.tracker.recovered(entry.ch, entry.sym);
          this.stats.recovered += 1;
          this.stats.replayed += entry.replayed || 0;
        } else {
          // The replay is gone (new epoch, too old): a fresh snapshot follows.
          this.tracker.expectSnapshot(entry.ch, entry.sym, entry.epoch);
          this.stats.notRecovered += 1;
          this.stats.reasons.push(String(entry.reason));
          if (this.stats.reasons.length > 50) this.stats.reasons.shift();
          this.on.lost?.(entry);
        }
      }
      for (const entry of Array.isArray(m.failed) ? m.failed : []) {
        const key = streamKey(entry.ch, entry.sym);
        this.wanted.delete(key);
        this.subscribed.delete(key);
        this.tracker.forget(entry.ch, entry.sym);
        this.on.failed?.(entry);
      }
    }
    this.maybeLive();
  }

  onData(m) {
    if (!Array.isArray(m.events)) return;
    for (const e of m.events) {
      if (!e || typeof e.ch !== "string" || typeof e.sym !== "string" || !Number.isInteger(e.seq)) continue;
      if (!this.isWanted(e.ch, e.sym)) continue; // unsubscribed while it was on its way
      const verdict = this.tracker.event(e);
      if (verdict === OK) this.on.event?.(e);
      else if (verdict === GAP) this.resumeAfterGap(e.ch, e.sym);
      // DUPLICATE: already applied; ORPHAN, SKIP: a snapshot or replay is on its way
    }
  }

  resumeAfterGap(ch, sym) {
    const position = this.tracker.position(ch, sym);
    this.tracker.markRecovering(ch, sym);
    this.request({ op: "subscribe", streams: [position] }, [streamKey(ch, sym)]);
  }

  onError(m) {
    if (m.fatal && Number.isFinite(m.retry_after_ms)) this.retryAfterMs = m.retry_after_ms;
    const request = this.pending.get(m.id);
    if (request) {
      // The whole request was refused: nothing of it is subscribed.
      this.pending.delete(m.id);
      for (const key of request.keys) this.subscribed.delete(key);
      if (m.code === "RATE_LIMITED" && !m.fatal) {
        setTimeout(() => this.queueSync(), m.retry_after_ms || 1_000);
      } else {
        for (const key of request.keys) {
          const stream = this.wanted.get(key);
          this.wanted.delete(key);
          if (stream) this.tracker.forget(stream.ch, stream.sym);
        }
      }
      this.maybeLive();
    }
    this.on.error?.(m, request);
  }
}
