// The watchlist table: one row per symbol, painted from Market state once per animation
// frame, only for rows that changed and are on screen. Every server string goes through
// textContent.

import * as fmt from "./format.js";
import { drawSparkline } from "./sparkline.js";
import { reducedMotion } from "./theme.js";

const FLASH_GAP_MS = 334; // at most 3 flashes a second per cell (WCAG 2.3.1)
const FLASH_HOLD_MS = 300; // then the background goes (no fade: see style.css)
const SPARK_GAP_MS = 1_000; // a session trend needs no more than one redraw a second
// Rows painted per frame at most; the rest wait for the next frame, longest-waiting first. A
// burst (a feed stepping every symbol at once) then costs two moderate frames, not one long
// one. Fewer rows per frame cost more in total (each frame has a fixed price): measured with
// 50 symbols, 12 rows per frame took ~30 % more main-thread time than 50.
const ROWS_PER_FRAME = 32;
const STATUS_LABELS = { pre: "pre", open: "open", post: "post", closed: "closed", halted: "halted" };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(action, text, label) {
  const b = el("button", `icon act-${action}`, text);
  b.type = "button";
  b.dataset.action = action;
  b.setAttribute("aria-label", label);
  b.title = label;
  return b;
}

export class WatchlistView {
  /**
   * @param {HTMLTableSectionElement} tbody
   * @param {HTMLElement} scroller  the scrolling container (visibility is judged inside it)
   * @param {object} deps  {market, hook, staleMs, onAction(action, sym, button), request()}
   */
  constructor(tbody, scroller, { market, hook, staleMs, onAction, request }) {
    this.tbody = tbody;
    this.market = market;
    this.hook = hook;
    this.staleMs = staleMs;
    this.request = request;
    this.rows = new Map(); // sym -> row
    this.byTr = new WeakMap();
    this.flashing = new Set();
    this.selected = null;
    this.observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const row = this.byTr.get(entry.target);
          if (!row) continue;
          row.visible = entry.isIntersecting;
          if (row.visible) this.market.dirty.add(row.sym);
        }
        this.request();
      },
      { root: scroller, rootMargin: "200px 0px" },
    );
    tbody.addEventListener("pointerover", (ev) => this.title(ev.target));
    tbody.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      const tr = b?.closest("tr");
      const row = tr && this.byTr.get(tr);
      if (row) onAction(b.dataset.action, row.sym, b);
    });
    setInterval(() => this.checkStale(), 1_000);
  }

  /** Show exactly these symbols, in this order; rows are reused. */
  setSymbols(symbols) {
    const keep = new Set(symbols);
    for (const [sym, row] of this.rows) {
      if (!keep.has(sym)) {
        this.observer.unobserve(row.tr);
        row.tr.remove();
        this.flashing.delete(row);
        this.rows.delete(sym);
      }
    }
    symbols.forEach((sym, i) => {
      let row = this.rows.get(sym);
      if (!row) {
        row = this.createRow(sym);
        this.rows.set(sym, row);
        this.observer.observe(row.tr);
        this.market.dirty.add(sym);
      }
      if (this.tbody.children[i] !== row.tr) this.tbody.insertBefore(row.tr, this.tbody.children[i] ?? null);
      row.index = i;
    });
    for (const row of this.rows.values()) {
      row.upBtn.disabled = row.index === 0;
      row.downBtn.disabled = row.index === symbols.length - 1;
    }
    this.request();
  }

  createRow(sym) {
    const tr = el("tr");
    const head = el("th");
    head.scope = "row";
    const symBtn = el("button", "sym", sym);
    symBtn.type = "button";
    symBtn.dataset.action = "select";
    symBtn.setAttribute("aria-pressed", "false");
    const name = el("span", "name");
    head.append(symBtn, name);

    // Each changing value is one text node in its own span, updated in place.
    const value = (className) => {
      const td = el("td", className);
      const v = el("span", "v", fmt.DASH);
      td.append(v);
      return [td, v];
    };
    const priceCell = el("td", "num last");
    const priceBox = el("span", "v");
    const priceText = el("span", "price", fmt.DASH);
    const tick = el("span", "tick", "\u00A0");
    tick.setAttribute("aria-hidden", "true");
    priceBox.append(priceText, tick);
    priceCell.append(priceBox);

    const [chgCell, chg] = value("num chg flat");
    const [pctCell, pct] = value("num pct flat");
    const [bidCell, bid] = value("num bid");
    const [askCell, ask] = value("num ask");
    const [volCell, vol] = value("num vol");

    const rangeCell = el("td", "range");
    const track = el("span", "range-track");
    const mark = el("span", "range-mark");
    track.append(mark);
    track.setAttribute("role", "img");
    track.setAttribute("aria-label", "Day range not known yet");
    rangeCell.append(track);

    const sparkCell = el("td", "spark");
    const canvas = el("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${sym}: no trades yet`);
    sparkCell.append(canvas);

    const statusCell = el("td", "status");
    const badge = el("span", "badge", "");
    statusCell.append(badge);

    const actions = el("td", "actions");
    const upBtn = button("up", "\u2191", `Move ${sym} up`);
    const downBtn = button("down", "\u2193", `Move ${sym} down`);
    const removeBtn = button("remove", "\u2715", `Remove ${sym}`);
    actions.append(upBtn, downBtn, removeBtn);

    tr.append(head, priceCell, chgCell, pctCell, bidCell, askCell, volCell, rangeCell, sparkCell, statusCell, actions);
    const row = {
      sym,
      tr,
      symBtn,
      name,
      priceCell,
      priceText,
      tick,
      chgCell,
      chg,
      pctCell,
      pct,
      bid,
      ask,
      vol,
      track,
      mark,
      canvas,
      badge,
      upBtn,
      downBtn,
      removeBtn,
      shown: {},
      paintedLast: null,
      lastFlashAt: -Infinity,
      flashUntil: 0,
      sparkVersion: -1,
      // Spread the sparklines' once-a-second redraws over the second.
      sparkAt: performance.now() - Math.random() * SPARK_GAP_MS,
      visible: true,
      stale: false,
      index: 0,
    };
    this.byTr.set(tr, row);
    return row;
  }

  /** Tooltips are computed when the pointer gets there, not on every tick. */
  title(target) {
    const tr = target.closest("tr");
    const row = tr && this.byTr.get(tr);
    const s = row && this.market.symbols.get(row.sym);
    if (!s) return;
    const d = s.decimals;
    const td = target.closest("td");
    let text = null;
    if (td?.classList.contains("vol")) text = s.volume === null ? "" : `${fmt.integer(s.volume)} shares`;
    else if (td?.classList.contains("bid") || td?.classList.contains("ask"))
      text = s.bid !== null && s.ask !== null ? `Spread ${fmt.price(s.ask - s.bid, d)}` : "";
    else if (td?.classList.contains("range")) text = row.track.getAttribute("aria-label");
    else if (td?.classList.contains("last"))
      text = row.shown.tickDir ? `Last trade: ${row.shown.tickDir === "up" ? "uptick" : "downtick"}` : "";
    else if (td?.classList.contains("status")) text = s.statusReason ? `${s.status}: ${s.statusReason}` : "";
    if (td && text !== null && td.title !== text) td.title = text;
  }

  setSelected(sym) {
    this.selected = sym;
    for (const row of this.rows.values()) {
      const on = row.sym === sym;
      row.symBtn.setAttribute("aria-pressed", String(on));
      row.tr.classList.toggle("selected", on);
    }
  }

  setName(sym, name) {
    const row = this.rows.get(sym);
    if (row && row.name.textContent !== name) row.name.textContent = name;
  }

  rowButton(sym, action) {
    const row = this.rows.get(sym);
    return row && { up: row.upBtn, down: row.downBtn, remove: row.removeBtn, select: row.symBtn }[action];
  }

  checkStale() {
    const now = performance.now();
    for (const row of this.rows.values()) {
      const s = this.market.symbols.get(row.sym);
      const stale = !!s && s.isStale(now, this.staleMs);
      if (stale !== row.stale) {
        row.stale = stale;
        this.market.dirty.add(row.sym);
        this.request();
      }
    }
  }

  /** Paint what changed; returns true when another frame is needed (flashes, throttled sparklines). */
  paint(now) {
    for (const row of this.flashing) {
      if (now >= row.flashUntil) {
        row.priceCell.classList.remove("flash-up", "flash-down");
        this.flashing.delete(row);
      }
    }
    let again = false;
    let budget = ROWS_PER_FRAME;
    for (const sym of this.market.dirty) {
      const row = this.rows.get(sym);
      if (!row) {
        this.market.dirty.delete(sym);
        continue;
      }
      if (!row.visible) continue; // painted when it scrolls into view
      if (budget-- === 0) {
        again = true;
        break;
      }
      // Painted rows leave the set, so rows changing again queue up behind the waiting ones.
      if (this.paintRow(row, now)) this.market.dirty.delete(sym);
      else again = true;
    }
    return again || this.flashing.size > 0;
  }

  text(row, key, node, value) {
    if (row.shown[key] !== value) {
      row.shown[key] = value;
      const t = node.firstChild;
      // Changing a text node's data is cheaper than replacing the node (textContent).
      if (t && t.nodeType === Node.TEXT_NODE && !t.nextSibling) t.data = value;
      else node.textContent = value;
    }
  }

  /** Returns false when part of the row (the sparkline) still waits for its turn. */
  paintRow(row, now) {
    const s = this.market.symbols.get(row.sym);
    if (!s) return true;
    const d = s.decimals;
    this.text(row, "price", row.priceText, fmt.price(s.last, d));

    // Tick direction (against the last painted price) flashes; the day's change does not.
    if (s.last !== null && row.paintedLast !== null && s.last !== row.paintedLast) {
      const dir = s.last > row.paintedLast ? "up" : "down";
      if (row.shown.tickDir !== dir) {
        row.shown.tickDir = dir;
        this.text(row, "tick", row.tick, dir === "up" ? "\u25B2" : "\u25BC");
        row.tick.className = `tick ${dir}`;
      }
      if (!reducedMotion.matches && !row.stale && now - row.lastFlashAt >= FLASH_GAP_MS) {
        if (this.flashing.has(row)) row.priceCell.classList.remove("flash-up", "flash-down");
        row.priceCell.classList.add(`flash-${dir}`);
        row.lastFlashAt = now;
        row.flashUntil = now + FLASH_HOLD_MS;
        this.flashing.add(row);
        const log = this.hook.flashes;
        log.push({ sym: row.sym, dir, from: row.paintedLast, to: s.last, t: Math.round(now) });
        if (log.length > 500) log.shift();
      }
    }
    row.paintedLast = s.last;

    const diff = s.last !== null && s.prevClose !== null ? s.last - s.prevClose : null;
    const sign = diff === null ? "flat" : diff > 0 ? "up" : diff < 0 ? "down" : "flat";
    const arrow = sign === "up" ? "\u25B2 " : sign === "down" ? "\u25BC " : "";
    this.text(row, "chg", row.chg, diff === null ? fmt.DASH : arrow + fmt.change(diff, d));
    this.text(row, "pct", row.pct, diff === null || !s.prevClose ? fmt.DASH : fmt.percent((diff / s.prevClose) * 100));
    if (row.shown.sign !== sign) {
      row.shown.sign = sign;
      row.chgCell.className = `num chg ${sign}`;
      row.pctCell.className = `num pct ${sign}`;
    }

    this.text(row, "bid", row.bid, s.bid === null ? fmt.DASH : `${fmt.price(s.bid, d)} \u00D7 ${fmt.integer(s.bidSize)}`);
    this.text(row, "ask", row.ask, s.ask === null ? fmt.DASH : `${fmt.price(s.ask, d)} \u00D7 ${fmt.integer(s.askSize)}`);
    this.text(row, "vol", row.vol, fmt.compact(s.volume));

    if (s.low !== null && s.high !== null && s.last !== null) {
      const span = s.high - s.low;
      const at = span > 0 ? ((s.last - s.low) / span) * 100 : 50;
      const left = `${Math.min(100, Math.max(0, at)).toFixed(1)}%`;
      if (row.shown.rangeAt !== left) {
        row.shown.rangeAt = left;
        row.mark.style.left = left;
      }
      const range = `Day range ${fmt.price(s.low, d)} to ${fmt.price(s.high, d)}`;
      if (row.shown.range !== range) {
        row.shown.range = range; // an attribute: no layout, unlike visually hidden text
        row.track.setAttribute("aria-label", range);
      }
      if (!row.shown.rangeKnown) {
        row.shown.rangeKnown = true;
        row.track.classList.add("known");
      }
    } else if (row.shown.rangeKnown) {
      // A new day (or a new epoch) before its first trade: no range yet.
      row.shown.rangeKnown = false;
      row.shown.range = row.shown.rangeAt = undefined;
      row.track.classList.remove("known");
      row.track.setAttribute("aria-label", "Day range not known yet");
    }

    const status = row.stale ? "stale" : (STATUS_LABELS[s.status] ?? "");
    this.text(row, "status", row.badge, status);
    if (row.shown.statusClass !== status) {
      row.shown.statusClass = status;
      row.badge.className = status ? `badge badge-${status}` : "badge";
      row.tr.classList.toggle("stale", row.stale);
      row.tr.classList.toggle("halted", s.status === "halted");
    }

    if (row.shown.sparkPrev !== s.prevClose) {
      row.shown.sparkPrev = s.prevClose;
      row.sparkVersion = -1;
    }
    if (s.spark.version !== row.sparkVersion) {
      if (now - row.sparkAt < SPARK_GAP_MS) return false;
      row.sparkAt = now;
      row.sparkVersion = s.spark.version;
      drawSparkline(row.canvas, s.spark, s.prevClose);
      const label =
        diff === null
          ? `${row.sym}: no trades yet`
          : `${row.sym} session trend: ${sign === "flat" ? "unchanged" : sign} ${fmt.percent((diff / s.prevClose) * 100)} from the previous close`;
      if (row.shown.sparkLabel !== label) {
        row.shown.sparkLabel = label;
        row.canvas.setAttribute("aria-label", label);
      }
    }
    return true;
  }

  /** Redraw every sparkline (after a theme change). */
  repaintAll() {
    for (const row of this.rows.values()) {
      row.sparkVersion = -1;
      row.sparkAt = -Infinity;
      this.market.dirty.add(row.sym);
    }
    this.request();
  }
}
