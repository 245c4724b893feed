// What the page knows about each symbol, folded from snapshots and events. No DOM here:
// the painter reads this state once per animation frame.

const TAPE_LENGTH = 40; // recent trades kept per symbol
export const SPARK_POINTS = 390; // one regular session of 1-minute buckets

/**
 * A session sparkline: closes per time bucket. Buckets start at the bar interval the history
 * came in (1 s or 1 min) and double in width whenever there are more than SPARK_POINTS.
 */
export class Spark {
  constructor(widthMs = 1_000) {
    this.widthMs = widthMs;
    this.buckets = []; // bucket start (ms)
    this.closes = [];
    this.version = 0;
  }

  add(ts, close) {
    const bucket = ts - (ts % this.widthMs);
    const n = this.buckets.length;
    if (n && bucket === this.buckets[n - 1]) {
      this.closes[n - 1] = close;
    } else if (!n || bucket > this.buckets[n - 1]) {
      this.buckets.push(bucket);
      this.closes.push(close);
      if (this.buckets.length > SPARK_POINTS) this.coarsen();
    } else {
      return; // older than what we show: the history covered it
    }
    this.version += 1;
  }

  coarsen() {
    this.widthMs *= 2;
    const buckets = [];
    const closes = [];
    for (let i = 0; i < this.buckets.length; i++) {
      const bucket = this.buckets[i] - (this.buckets[i] % this.widthMs);
      if (buckets.length && buckets[buckets.length - 1] === bucket) closes[closes.length - 1] = this.closes[i];
      else {
        buckets.push(bucket);
        closes.push(this.closes[i]);
      }
    }
    this.buckets = buckets;
    this.closes = closes;
  }

  /** Replace the history with bars (oldest first); live points newer than them are kept. */
  seed(bars, intervalMs) {
    const live = this.buckets.map((b, i) => [b, this.closes[i]]);
    this.widthMs = intervalMs;
    this.buckets = [];
    this.closes = [];
    for (const bar of bars) this.add(bar.start_ts, bar.close);
    const last = this.buckets.length ? this.buckets[this.buckets.length - 1] : -Infinity;
    for (const [bucket, close] of live) if (bucket >= last) this.add(bucket, close);
    this.version += 1;
  }

  clear() {
    this.buckets = [];
    this.closes = [];
    this.version += 1;
  }
}

export class SymbolState {
  constructor(sym) {
    this.sym = sym;
    this.name = "";
    this.decimals = 2;
    this.prevClose = null;
    this.open = null;
    this.high = null;
    this.low = null;
    this.last = null;
    this.volume = null;
    this.status = null;
    this.statusReason = "";
    this.bid = null;
    this.bidSize = null;
    this.ask = null;
    this.askSize = null;
    this.tape = []; // newest last: {ts, price, size, side}
    this.tapeVersion = 0;
    this.spark = new Spark();
    this.lastEventAt = 0; // performance.now() of the last event or snapshot
    this.meanGapMs = null; // smoothed time between events, for the stale rule
    this.version = 0; // bumps on every change; the painter compares
  }

  touch() {
    const now = performance.now();
    if (this.lastEventAt) {
      const gap = now - this.lastEventAt;
      this.meanGapMs = this.meanGapMs === null ? gap : this.meanGapMs * 0.9 + gap * 0.1;
    }
    this.lastEventAt = now;
    this.version += 1;
  }

  /** Quiet for longer than max(5 s, 10 typical gaps) while the market is open (or unknown). */
  isStale(now, minMs) {
    if (!this.lastEventAt) return false;
    if (this.status !== null && this.status !== "open") return false;
    const limit = Math.max(minMs, 10 * (this.meanGapMs ?? 0));
    return now - this.lastEventAt > limit;
  }

  stats(data) {
    const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
    if ("price_decimals" in data && Number.isInteger(data.price_decimals)) this.decimals = data.price_decimals;
    if ("prev_close" in data) this.prevClose = num(data.prev_close);
    if ("open" in data) this.open = num(data.open);
    if ("high" in data) this.high = num(data.high);
    if ("low" in data) this.low = num(data.low);
    if ("last" in data) this.last = num(data.last);
    if ("volume" in data) this.volume = num(data.volume);
    if ("status" in data && (data.status === null || typeof data.status === "string")) this.status = data.status;
  }

  quote(q) {
    this.bid = q.bid;
    this.bidSize = q.bid_size;
    this.ask = q.ask;
    this.askSize = q.ask_size;
  }

  /** The aggressor side, inferred: at or through the quote, else against the previous trade. */
  sideOf(price) {
    if (this.ask !== null && price >= this.ask) return "buy";
    if (this.bid !== null && price <= this.bid) return "sell";
    const prev = this.tape.length ? this.tape[this.tape.length - 1].price : null;
    if (prev === null || price === prev) return "";
    return price > prev ? "buy" : "sell";
  }

  trade(e) {
    const side = e.side === "buy" || e.side === "sell" ? e.side : this.sideOf(e.price);
    this.tape.push({ ts: e.ts, price: e.price, size: e.size, side });
    if (this.tape.length > TAPE_LENGTH) this.tape.shift();
    this.tapeVersion += 1;
    this.last = e.price;
    this.volume = (this.volume ?? 0) + e.size;
    if (this.open === null) this.open = e.price;
    this.high = this.high === null ? e.price : Math.max(this.high, e.price);
    this.low = this.low === null ? e.price : Math.min(this.low, e.price);
    this.spark.add(e.ts, e.price);
  }

  newDay(prevClose) {
    this.prevClose = prevClose;
    this.open = this.high = this.low = null;
    this.volume = 0;
    this.spark.clear();
  }
}

export class Market {
  constructor() {
    this.symbols = new Map();
    this.dirty = new Set(); // symbols changed since the last paint
    this.latestTs = 0; // market time of the newest event seen (simulated feeds run fast)
  }

  get(sym) {
    let s = this.symbols.get(sym);
    if (!s) {
      s = new SymbolState(sym);
      this.symbols.set(sym, s);
    }
    return s;
  }

  drop(sym) {
    this.symbols.delete(sym);
    this.dirty.delete(sym);
  }

  snapshot(m) {
    const s = this.get(m.sym);
    if (Number.isFinite(m.ts) && m.seq > 0 && m.ts > this.latestTs) this.latestTs = m.ts;
    const data = m.data && typeof m.data === "object" ? m.data : {};
    s.stats(data);
    if (m.ch === "quotes" && typeof data.bid === "number") s.quote(data);
    if (m.ch === "status" && typeof data.reason === "string") s.statusReason = data.reason;
    if (m.ch === "trades" && typeof data.price === "number" && !s.tape.length) {
      s.tape.push({ ts: m.ts, price: data.price, size: data.size, side: "" });
      s.tapeVersion += 1;
    }
    s.touch();
    this.dirty.add(m.sym);
  }

  event(e) {
    const s = this.symbols.get(e.sym);
    if (!s) return;
    if (Number.isFinite(e.ts) && e.ts > this.latestTs) this.latestTs = e.ts;
    if (e.ch === "trades") {
      if (typeof e.price !== "number" || typeof e.size !== "number") return;
      s.trade(e);
    } else if (e.ch === "quotes") {
      s.quote(e);
    } else if (e.ch === "status") {
      if (e.reason === "NEW_DAY") s.newDay(typeof e.prev_close === "number" ? e.prev_close : s.prevClose);
      else if (typeof e.prev_close === "number") s.prevClose = e.prev_close;
      s.status = typeof e.status === "string" ? e.status : null;
      s.statusReason = typeof e.reason === "string" ? e.reason : "";
    } else {
      return;
    }
    s.touch();
    this.dirty.add(e.sym);
  }
}
