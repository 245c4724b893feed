// The detail chart: candlesticks over a volume histogram, drawn on one canvas, with a
// crosshair (mouse or arrow keys) whose OHLCV readout is plain text.

import * as fmt from "./format.js";
import { crisp, fitCanvas } from "./sparkline.js";
import { colors } from "./theme.js";

const SPACING = 8; // CSS px per bar
const AXIS_W = 64; // price labels on the right
const AXIS_H = 20; // time labels at the bottom
const VOLUME_SHARE = 0.2; // of the plot height
const MAX_BARS = 1_000;
// Setting a canvas font makes Chromium resolve style, forcing a layout of the whole page when
// anything is dirty: set it only when the context was reset (by a resize).
const FONT = "11px system-ui, sans-serif";
const TIME_STEPS = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].map((s) => s * 1000);

function niceStep(range, target) {
  const raw = range / target;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

export class CandleChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {HTMLElement} readout  gets the OHLCV text of the bar under the crosshair
   */
  constructor(canvas, readout) {
    this.canvas = canvas;
    this.readout = readout;
    this.bars = []; // oldest first, by start_ts
    this.intervalMs = 1_000;
    this.decimals = 2;
    this.cross = null; // {i: index into bars, y: CSS px} or null
    this.width = 0;
    this.height = 0;
    this.visible = []; // the bars drawn in the last paint
    this.lastUpdateTs = null; // ts of the newest bar event applied; null: none yet
    this.folded = []; // trades folded in since that bar event
    this.stats = { draws: 0, drawn: 0 };
    this.dirty = true;
    new ResizeObserver((entries) => {
      const box = entries[entries.length - 1].contentRect;
      this.resize(Math.round(box.width), Math.round(box.height));
      this.onResize?.();
    }).observe(canvas);
    canvas.addEventListener("pointermove", (ev) => this.pointAt(ev.offsetX, ev.offsetY));
    canvas.addEventListener("pointerleave", () => this.setCross(null));
    canvas.addEventListener("keydown", (ev) => this.key(ev));
    canvas.addEventListener("blur", () => this.setCross(null));
  }

  setBars(bars, intervalMs, decimals) {
    this.bars = bars.slice(-MAX_BARS);
    // Trades are folded in only after a bar event has shown how far the bars go: a history
    // bar does not say which trades it already holds.
    this.lastUpdateTs = null;
    this.folded = [];
    this.intervalMs = intervalMs;
    this.decimals = decimals;
    this.cross = null;
    this.dirty = true;
    this.showReadout();
  }

  /**
   * A trade newer than the last bar event: fold it into the forming bar (or start the next
   * one), so the last candle moves with every trade. The server publishes a forming bar at
   * most once per tenth of its interval (and throttling may hold it back); each bar event
   * replaces what was folded here, and trades newer than it are folded in again.
   */
  foldTrade(ts, price, size) {
    if (this.lastUpdateTs === null || !(ts > this.lastUpdateTs)) return;
    this.folded.push({ ts, price, size });
    if (this.folded.length > 1_000) this.folded.shift();
    this.applyTrade(ts, price, size);
  }

  applyTrade(ts, price, size) {
    const n = this.bars.length;
    if (!n) return;
    const last = this.bars[n - 1];
    if (ts >= last.start_ts && ts < last.end_ts) {
      this.bars[n - 1] = {
        ...last,
        high: Math.max(last.high, price),
        low: Math.min(last.low, price),
        close: price,
        volume: last.volume + size,
        trades: last.trades + 1,
      };
    } else if (ts >= last.end_ts) {
      const start = ts - (ts % this.intervalMs);
      this.bars.push({
        start_ts: start,
        end_ts: start + this.intervalMs,
        open: price,
        high: price,
        low: price,
        close: price,
        volume: size,
        trades: 1,
        final: false,
      });
      if (this.bars.length > MAX_BARS) this.bars.shift();
    } else {
      return;
    }
    this.dirty = true;
    if (!this.cross) this.showReadout();
  }

  /** A live version of a bar: replaces the bar with the same start, or appends a newer one. */
  upsert(bar) {
    const bars = this.bars;
    const n = bars.length;
    if (n && bars[n - 1].start_ts === bar.start_ts) bars[n - 1] = bar;
    else if (!n || bar.start_ts > bars[n - 1].start_ts) {
      bars.push(bar);
      if (bars.length > MAX_BARS) {
        bars.shift();
        if (this.cross) this.cross.i = Math.max(0, this.cross.i - 1);
      }
    } else {
      const i = bars.findIndex((b) => b.start_ts === bar.start_ts);
      if (i < 0) return;
      bars[i] = bar;
    }
    if (Number.isFinite(bar.ts) && (this.lastUpdateTs === null || bar.ts >= this.lastUpdateTs)) {
      this.lastUpdateTs = bar.ts;
      this.folded = this.folded.filter((t) => t.ts > bar.ts);
      // Trades newer than this version of the newest bar go back on top of it.
      if (bars[bars.length - 1] === bar) for (const t of this.folded) this.applyTrade(t.ts, t.price, t.size);
    }
    this.dirty = true;
    if (!this.cross) this.showReadout();
  }

  layout() {
    const plotW = Math.max(0, this.width - AXIS_W);
    const count = Math.max(1, Math.floor(plotW / SPACING));
    const first = Math.max(0, this.bars.length - count);
    return { plotW, first, count };
  }

  pointAt(x, y) {
    const { plotW, first } = this.layout();
    if (x > plotW || !this.bars.length) return this.setCross(null);
    const n = this.bars.length - first;
    const slot = Math.floor((plotW - x) / SPACING); // 0 = newest, at the right edge
    const i = Math.min(this.bars.length - 1, Math.max(first, first + n - 1 - slot));
    this.setCross({ i, y });
  }

  key(ev) {
    if (!this.bars.length) return;
    const { first } = this.layout();
    const last = this.bars.length - 1;
    let i = this.cross ? this.cross.i : last;
    if (ev.key === "ArrowLeft") i = Math.max(first, i - (this.cross ? 1 : 0));
    else if (ev.key === "ArrowRight") i = Math.min(last, i + (this.cross ? 1 : 0));
    else if (ev.key === "Home") i = first;
    else if (ev.key === "End") i = last;
    else if (ev.key === "Escape") return this.setCross(null);
    else return undefined;
    ev.preventDefault();
    return this.setCross({ i, y: null });
  }

  setCross(cross) {
    this.cross = cross;
    this.dirty = true;
    this.showReadout();
    this.onCross?.();
  }

  showReadout() {
    const bar = this.cross ? this.bars[this.cross.i] : this.bars[this.bars.length - 1];
    if (!bar) {
      this.readout.textContent = "No bars yet: they appear with the first trades.";
      return;
    }
    const d = this.decimals;
    this.readout.textContent =
      `${fmt.time(bar.start_ts)} ET  ` +
      `O ${fmt.price(bar.open, d)}  H ${fmt.price(bar.high, d)}  L ${fmt.price(bar.low, d)}  ` +
      `C ${fmt.price(bar.close, d)}  V ${fmt.integer(bar.volume)}` +
      (bar.final === false ? "  (forming)" : "");
  }

  resize(width, height) {
    if (width !== this.width || height !== this.height) {
      this.width = width;
      this.height = height;
      this.dirty = true;
    }
  }

  /** Redraw if anything changed; returns whether it drew. */
  paint() {
    if (!this.dirty || !this.width || !this.height) return false;
    this.dirty = false;
    const w = this.width;
    const h = this.height;
    const ctx = fitCanvas(this.canvas, w, h);
    const { plotW, first } = this.layout();
    const bars = this.bars.slice(first);
    this.visible = bars;
    this.stats.draws += 1;
    this.stats.drawn = bars.length;
    const plotH = h - AXIS_H;
    const volH = Math.round(plotH * VOLUME_SHARE);
    const priceH = plotH - volH - 6;
    if (ctx.font !== FONT) ctx.font = FONT;
    if (ctx.textBaseline !== "middle") ctx.textBaseline = "middle";
    if (!bars.length) return true;

    let lo = Infinity;
    let hi = -Infinity;
    let vmax = 0;
    for (const b of bars) {
      lo = Math.min(lo, b.low);
      hi = Math.max(hi, b.high);
      vmax = Math.max(vmax, b.volume);
    }
    if (hi === lo) {
      hi += 10 ** -this.decimals * 5;
      lo -= 10 ** -this.decimals * 5;
    }
    const padY = (hi - lo) * 0.06;
    lo -= padY;
    hi += padY;
    const y = (v) => 4 + ((hi - v) / (hi - lo)) * (priceH - 4);
    const x = (i) => plotW - (bars.length - i) * SPACING + SPACING / 2; // centre of bar i

    // grid and price axis (no label where the last-price tag goes)
    const step = niceStep(hi - lo, 5);
    const lastY = y(this.bars[this.bars.length - 1].close);
    ctx.strokeStyle = colors.grid;
    ctx.fillStyle = colors.muted;
    ctx.lineWidth = 1;
    ctx.textAlign = "left";
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const yy = crisp(y(v));
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(plotW, yy);
      ctx.stroke();
      if (Math.abs(yy - lastY) > 14) ctx.fillText(fmt.price(v, this.decimals), plotW + 6, yy);
    }

    // time axis: labels on round times, at least ~80 px apart
    const minStep = (80 / SPACING) * this.intervalMs;
    const tStep = TIME_STEPS.find((s) => s >= minStep) ?? 3_600_000 * 4;
    ctx.textAlign = "center";
    let lastLabelX = -Infinity;
    for (let i = 0; i < bars.length; i++) {
      const t = bars[i].start_ts;
      const prev = i ? bars[i - 1].start_ts : t - this.intervalMs;
      if (Math.floor(t / tStep) === Math.floor(prev / tStep) && i) continue;
      const xx = x(i);
      if (xx - lastLabelX < 70 || xx < 24 || xx > plotW - 24) continue;
      lastLabelX = xx;
      const gx = crisp(xx);
      ctx.beginPath();
      ctx.moveTo(gx, 0);
      ctx.lineTo(gx, plotH);
      ctx.stroke();
      ctx.fillText(tStep < 60_000 ? fmt.time(t) : fmt.shortTime(t), xx, plotH + AXIS_H / 2);
    }

    // volume histogram and candles
    const body = SPACING - 2;
    const volTop = plotH - volH;
    for (let i = 0; i < bars.length; i++) {
      const b = bars[i];
      const up = b.close >= b.open;
      const cx = x(i);
      const left = Math.round(cx - body / 2);
      ctx.fillStyle = up ? colors["candle-up"] : colors["candle-down"];
      ctx.globalAlpha = 0.45;
      const vh = vmax ? Math.max(1, (b.volume / vmax) * (volH - 2)) : 0;
      ctx.fillRect(left, volTop + volH - vh, body, vh);
      ctx.globalAlpha = 1;
      ctx.strokeStyle = ctx.fillStyle;
      const wx = crisp(cx);
      ctx.beginPath();
      ctx.moveTo(wx, Math.round(y(b.high)));
      ctx.lineTo(wx, Math.round(y(b.low)));
      ctx.stroke();
      const top = Math.round(y(Math.max(b.open, b.close)));
      const bottom = Math.round(y(Math.min(b.open, b.close)));
      ctx.fillRect(left, top, body, Math.max(1, bottom - top));
    }

    // last price line and label
    const lastBar = bars[bars.length - 1];
    const ly = crisp(y(lastBar.close));
    const lastUp = lastBar.close >= lastBar.open;
    ctx.strokeStyle = lastUp ? colors["candle-up"] : colors["candle-down"];
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(0, ly);
    ctx.lineTo(plotW, ly);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillRect(plotW + 1, ly - 8, AXIS_W - 2, 16);
    ctx.fillStyle = colors.bg;
    ctx.textAlign = "left";
    ctx.fillText(fmt.price(lastBar.close, this.decimals), plotW + 6, ly);

    // crosshair
    if (this.cross && this.cross.i >= first) {
      const cx = crisp(x(this.cross.i - first));
      ctx.strokeStyle = colors.crosshair;
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      ctx.moveTo(cx, 0);
      ctx.lineTo(cx, plotH);
      if (this.cross.y !== null && this.cross.y < priceH) {
        const cy = crisp(this.cross.y);
        ctx.moveTo(0, cy);
        ctx.lineTo(plotW, cy);
      }
      ctx.stroke();
      ctx.setLineDash([]);
    }
    return true;
  }

  /** A one-sentence summary for the canvas's accessible name. */
  summary(sym) {
    const bars = this.bars;
    if (!bars.length) return `${sym}: no bars yet`;
    const b = bars[bars.length - 1];
    const per = this.intervalMs < 60_000 ? "1-second" : "1-minute";
    return `${sym} ${per} candlestick chart, ${bars.length} bars; latest close ${fmt.price(b.close, this.decimals)}`;
  }
}
