// The detail panel of the selected symbol: quote header, candlestick chart (history from
// GET /api/v1/bars, then the live bars stream) and time and sales.

import { CandleChart } from "./candles.js";
import * as fmt from "./format.js";

const HISTORY_LIMIT = 300;
const TAPE_ROWS = 25;
const SESSION_LABELS = {
  pre: "Pre-market",
  open: "Regular session",
  post: "After hours",
  closed: "Market closed",
  halted: "Trading halted",
};

function cell(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = text;
  return node;
}

export class DetailView {
  /**
   * @param {object} els  {section, title, name, last, change, session, stats, canvas, readout, tape, intervalButtons}
   * @param {object} deps  {market, conn, hook, interval, request()}
   */
  constructor(els, { market, conn, hook, interval, request }) {
    this.els = els;
    this.market = market;
    this.conn = conn;
    this.hook = hook;
    this.request = request;
    this.sym = null;
    this.interval = interval;
    this.stream = null; // {ch, sym} of the bars stream we want
    this.history = null; // {epoch, seq} of the loaded history, null while loading
    this.buffer = []; // bars events that arrived before the history
    this.loadToken = 0;
    this.shownVersion = -1;
    this.tapeVersion = -1;
    this.labelAt = -Infinity;
    this.chart = new CandleChart(els.canvas, els.readout);
    this.chart.onCross = () => this.request();
    this.chart.onResize = () => this.request();
    hook.chart = { sym: null, interval, epoch: null, bars: 0, drawn: 0, draws: 0, historyBars: 0, liveBars: 0 };
    for (const b of els.intervalButtons) {
      b.addEventListener("click", () => this.setInterval(b.dataset.interval));
    }
    this.showIntervalButtons();
  }

  select(sym) {
    if (sym === this.sym) return;
    this.sym = sym;
    this.els.section.hidden = sym === null;
    this.shownVersion = -1;
    this.tapeVersion = -1;
    this.els.tape.replaceChildren();
    this.resubscribe();
  }

  setInterval(interval) {
    if (interval === this.interval) return;
    this.interval = interval;
    this.onIntervalChange?.(interval);
    this.showIntervalButtons();
    this.resubscribe();
  }

  showIntervalButtons() {
    for (const b of this.els.intervalButtons) b.setAttribute("aria-pressed", String(b.dataset.interval === this.interval));
  }

  resubscribe() {
    if (this.stream) this.conn.unwant([this.stream.ch], [this.stream.sym]);
    this.stream = null;
    this.loadToken += 1;
    if (this.sym === null) return;
    this.stream = { ch: `bars.${this.interval}`, sym: this.sym };
    const s = this.market.symbols.get(this.sym);
    this.chart.setBars([], this.intervalMs(), s ? s.decimals : 2);
    this.history = null;
    this.buffer = [];
    this.conn.want([this.stream.ch], [this.sym]); // its snapshot starts the history load
  }

  intervalMs() {
    return this.stream?.ch === "bars.1m" ? 60_000 : 1_000;
  }

  isOurs(ch, sym) {
    return this.stream !== null && this.stream.ch === ch && this.stream.sym === sym;
  }

  /**
   * Fetch the history once the stream's snapshot is in (after a subscribe, a reset or a resume
   * that could not recover): its `seq` is then at least the snapshot's, and the live events
   * that arrive meanwhile wait in a buffer; those past the history's `seq` are applied after it.
   */
  async loadHistory() {
    const token = ++this.loadToken;
    const { ch, sym } = this.stream;
    const intervalMs = this.intervalMs();
    this.history = null;
    this.buffer = [];
    const s = this.market.symbols.get(sym);
    let body = null;
    for (let attempt = 0; attempt < 5 && token === this.loadToken; attempt++) {
      try {
        const url = `/api/v1/bars?symbol=${encodeURIComponent(sym)}&interval=${ch.slice(5)}&limit=${HISTORY_LIMIT}`;
        const response = await fetch(url, { cache: "no-store" });
        if (response.ok) {
          body = await response.json();
          break;
        }
        if (response.status === 404) break; // not a symbol of this server (any more)
      } catch {
        // the server is away; a reconnect that cannot resume brings a snapshot, which reloads
      }
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    }
    if (token !== this.loadToken) return; // another symbol or interval since
    const bars = body && Array.isArray(body.bars) ? body.bars.filter((b) => b && Number.isFinite(b.start_ts)) : [];
    const decimals = body && Number.isInteger(body.price_decimals) ? body.price_decimals : s ? s.decimals : 2;
    this.history = { epoch: body?.epoch ?? null, seq: Number.isInteger(body?.seq) ? body.seq : -1 };
    this.chart.setBars(bars, intervalMs, decimals);
    for (const e of this.buffer) if (e.seq > this.history.seq) this.chart.upsert(e);
    this.buffer = [];
    Object.assign(this.hook.chart, {
      sym,
      interval: ch.slice(5),
      epoch: this.history.epoch,
      historyBars: bars.length,
      liveBars: 0,
    });
    this.request();
  }

  /** The bars stream (re)starts from a snapshot. Its bar values are not the bar's (the day's
   * statistics override them, docs/protocol.md 4.3), so the chart reloads the history. */
  barsSnapshot(m) {
    if (this.isOurs(m.ch, m.sym)) this.loadHistory();
  }

  barsEvent(e) {
    if (!this.isOurs(e.ch, e.sym)) return;
    if (this.history === null) {
      this.buffer.push(e);
      return;
    }
    this.chart.upsert(e);
    this.hook.chart.liveBars += 1;
    this.request();
  }

  /** A trade of the selected symbol (from the watchlist's trades stream). */
  trade(e) {
    if (this.history === null || e.sym !== this.sym) return;
    this.chart.foldTrade(e.ts, e.price, e.size);
    this.request();
  }

  paint(now) {
    if (this.sym === null) return;
    const s = this.market.symbols.get(this.sym);
    if (s && s.version !== this.shownVersion) {
      this.shownVersion = s.version;
      this.paintHeader(s);
    }
    if (s && s.tapeVersion !== this.tapeVersion) this.paintTape(s);
    if (this.chart.paint()) {
      Object.assign(this.hook.chart, {
        bars: this.chart.bars.length,
        drawn: this.chart.stats.drawn,
        draws: this.chart.stats.draws,
        lastStart: this.chart.bars.length ? this.chart.bars[this.chart.bars.length - 1].start_ts : null,
        lastClose: this.chart.bars.length ? this.chart.bars[this.chart.bars.length - 1].close : null,
      });
      if (now - this.labelAt > 2_000) {
        this.labelAt = now;
        this.els.canvas.setAttribute("aria-label", this.chart.summary(this.sym));
      }
    }
  }

  paintHeader(s) {
    const els = this.els;
    const d = s.decimals;
    if (els.title.textContent !== s.sym) els.title.textContent = s.sym;
    if (els.name.textContent !== s.name) els.name.textContent = s.name;
    els.last.textContent = fmt.price(s.last, d);
    const diff = s.last !== null && s.prevClose !== null ? s.last - s.prevClose : null;
    const sign = diff === null ? "flat" : diff > 0 ? "up" : diff < 0 ? "down" : "flat";
    const arrow = sign === "up" ? "\u25B2 " : sign === "down" ? "\u25BC " : "";
    els.change.textContent =
      diff === null ? "" : `${arrow}${fmt.change(diff, d)} (${fmt.percent((diff / s.prevClose) * 100)})`;
    els.change.className = `change ${sign}`;
    els.session.textContent = SESSION_LABELS[s.status] ?? "Session unknown";
    const values = {
      open: fmt.price(s.open, d),
      high: fmt.price(s.high, d),
      low: fmt.price(s.low, d),
      prev: fmt.price(s.prevClose, d),
      volume: fmt.integer(s.volume),
    };
    for (const [key, text] of Object.entries(values)) {
      const node = els.stats[key];
      if (node.textContent !== text) node.textContent = text;
    }
  }

  paintTape(s) {
    const body = this.els.tape;
    const added = this.tapeVersion < 0 ? s.tape.length : Math.min(s.tape.length, s.tapeVersion - this.tapeVersion);
    this.tapeVersion = s.tapeVersion;
    if (added <= 0) return;
    const fresh = s.tape.slice(-Math.min(added, TAPE_ROWS)).reverse();
    const d = s.decimals;
    const rows = fresh.map((t) => {
      const tr = document.createElement("tr");
      const side = t.side === "buy" ? "up" : t.side === "sell" ? "down" : "flat";
      tr.append(
        cell("td", "time", fmt.time(t.ts, true)),
        cell("td", `num ${side}`, fmt.price(t.price, d)),
        cell("td", "num", fmt.integer(t.size)),
        cell("td", `side ${side}`, t.side === "buy" ? "Buy" : t.side === "sell" ? "Sell" : "\u2013"),
      );
      tr.title = fmt.localTime(t.ts);
      return tr;
    });
    body.prepend(...rows);
    while (body.children.length > TAPE_ROWS) body.lastElementChild.remove();
  }
}
