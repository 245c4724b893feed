// stockpush live ticker page: wires the connection, the market state and the views.
// Plain ES modules, no build step, no third-party code. Server strings reach the page
// through textContent only, never innerHTML.

import { SymbolCombobox } from "./js/combobox.js";
import { CONNECTING, Connection, LIVE, OFFLINE, RECONNECTING } from "./js/connection.js";
import { DetailView } from "./js/detail.js";
import * as fmt from "./js/format.js";
import { Market } from "./js/market.js";
import * as prefs from "./js/prefs.js";
import * as theme from "./js/theme.js";
import { WatchlistView } from "./js/watchlist.js";

const WATCH_CHANNELS = ["trades", "quotes", "status"];
const DEFAULT_WATCHLIST = 8; // symbols shown when nothing was saved
const ANNOUNCE_EVERY_MS = 10_000;
const ANNOUNCE_MOVE = 0.01; // or at once on a move of 1 % since the last announcement
const NOTICE_MS = 20_000;

const params = new URLSearchParams(location.search);
const intParam = (name, fallback) => {
  const v = Number.parseInt(params.get(name) ?? "", 10);
  return Number.isFinite(v) && v >= 0 ? v : fallback;
};
// Debugging knobs (docs/page.md): state-channel throttle and the stale threshold.
const THROTTLE_MS = intParam("throttle_ms", 100);
const STALE_MS = intParam("stale_ms", 5_000);

const $ = (id) => document.getElementById(id);

// --- test and debugging hook -------------------------------------------------------------

const hook = {
  flashes: [],
  paintTimes: [],
  cspViolations: [],
  announcements: [],
  watchlist: [],
  chart: {},
};
window.__stockpush = hook;
document.addEventListener("securitypolicyviolation", (ev) => {
  hook.cspViolations.push({ directive: ev.violatedDirective, blocked: ev.blockedURI });
});

// --- state ----------------------------------------------------------------------------

const market = new Market();
const meta = new Map(); // sym -> {name}, from GET /api/v1/symbols
let serverSymbols = null; // from the latest hello
const initialWatchlist = prefs.loadWatchlist();
let watchlist = initialWatchlist ?? [];
let watchlistFromPrefs = initialWatchlist !== null; // else: the server's first symbols
let selected = prefs.loadSelected();
let paused = false;
let maxSymbols = Infinity;

// --- painting: once per animation frame, only when something changed --------------------

let frameRequested = false;
function request() {
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(frame);
  }
}

function frame(now) {
  frameRequested = false;
  if (paused) return; // state keeps folding in; painting resumes with the latest
  const started = performance.now();
  const again = view.paint(now);
  detail.paint(now);
  announce(now);
  hook.paintTimes.push(performance.now() - started);
  if (hook.paintTimes.length > 5_000) hook.paintTimes.splice(0, 1_000);
  if (again) request();
}

// --- notices --------------------------------------------------------------------------

function notice(text) {
  const list = $("notices");
  const item = document.createElement("div");
  const span = document.createElement("span");
  span.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "icon";
  close.textContent = "\u2715";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => item.remove());
  item.append(span, close);
  list.append(item);
  while (list.children.length > 4) list.firstElementChild.remove();
  setTimeout(() => item.remove(), NOTICE_MS);
}

// --- connection pill --------------------------------------------------------------------

let countdownTimer = 0;
function showState(state, detail) {
  const pill = $("conn");
  const text = $("conn-text");
  const countdown = $("conn-countdown");
  pill.dataset.state = state;
  clearInterval(countdownTimer);
  countdown.textContent = "";
  $("reconnect").hidden = state !== OFFLINE;
  document.body.dataset.conn = state;
  // The pill is a status region: only a real change of text is announced.
  const say = (words) => {
    if (text.textContent !== words) text.textContent = words;
  };
  if (state === CONNECTING) say("Connecting");
  else if (state === LIVE) say("Live");
  else if (state === OFFLINE) {
    say(detail.fatal ? `Offline (the server closed with ${detail.code})` : "Offline: no network");
    if (detail.fatal && detail.reason) notice(`Connection closed for good: ${detail.reason}`);
  } else if (state === RECONNECTING) {
    say("Reconnecting");
    if (detail.until) {
      const tick = () => {
        const s = Math.max(0, Math.ceil((detail.until - Date.now()) / 1000));
        countdown.textContent = s ? ` in ${s} s` : "\u2026";
      };
      tick();
      countdownTimer = setInterval(tick, 250);
    } else {
      countdown.textContent = "\u2026";
    }
  }
}

// --- the connection ---------------------------------------------------------------------

const scheme = location.protocol === "https:" ? "wss" : "ws";
const conn = new Connection({
  url: `${scheme}://${location.host}/v1/stream`,
  throttleMs: THROTTLE_MS,
  on: {
    hello: onHello,
    snapshot(m) {
      if (m.ch.startsWith("bars.")) detail.barsSnapshot(m);
      else {
        market.snapshot(m);
        request();
      }
    },
    event(e) {
      if (e.ch.startsWith("bars.")) detail.barsEvent(e);
      else {
        market.event(e);
        if (e.ch === "trades") detail.trade(e);
        request();
      }
    },
    // A new epoch: the sparkline's history restarts too. (The chart reloads on the
    // snapshot that follows.)
    reset(m) {
      if (m.ch === "trades") queueSparkHistory(m.sym);
    },
    lost(entry) {
      if (entry.ch === "trades") queueSparkHistory(entry.sym);
    },
    failed(entry) {
      if (entry.code === "UNKNOWN_SYMBOL") {
        if (!watchlist.includes(entry.sym)) return; // one notice per symbol, not per channel
        setWatchlist(watchlist.filter((s) => s !== entry.sym));
      }
      notice(`Cannot subscribe to ${entry.sym} (${entry.ch}): ${entry.message ?? entry.code}`);
    },
    error(m) {
      if (typeof m.message === "string" && m.code !== "RATE_LIMITED") notice(`Server: ${m.message}`);
    },
    notice(m) {
      if (typeof m.message === "string") notice(`Server: ${m.message}`);
    },
    state: showState,
  },
});

Object.defineProperties(hook, {
  state: { get: () => conn.state },
  stats: { get: () => conn.stats },
  seq: {
    get: () => ({
      gaps: conn.tracker.gaps,
      gapCount: conn.tracker.gapCount,
      duplicates: conn.tracker.duplicates,
      orphans: conn.tracker.orphans,
      events: conn.tracker.events,
    }),
  },
  streams: { get: () => conn.tracker.toJSON() },
});
/** Feed a frame to the page's own message handler, exactly as if the server had sent it. */
hook.inject = (message) => conn.receive(typeof message === "string" ? message : JSON.stringify(message));
hook.symbol = (sym) => {
  const s = market.symbols.get(sym);
  if (!s) return null;
  const { tape, spark, ...rest } = s;
  return { ...rest, tape: tape.slice(), spark: spark.closes.length };
};

function onHello(symbols, hello) {
  const known = new Map(symbols.map((s) => [s.toLowerCase(), s]));
  const changed = serverSymbols === null || serverSymbols.join("\n") !== symbols.join("\n");
  serverSymbols = symbols;
  const subs = hello.limits?.max_subscriptions;
  if (Number.isInteger(subs)) maxSymbols = Math.max(1, Math.floor((subs - 1) / WATCH_CHANNELS.length));
  let list;
  if (!watchlistFromPrefs) {
    list = symbols.slice(0, DEFAULT_WATCHLIST);
    watchlistFromPrefs = true;
  } else {
    list = [];
    const missing = [];
    for (const sym of watchlist) {
      const match = known.get(sym.toLowerCase());
      if (match && !list.includes(match)) list.push(match);
      else if (!match) missing.push(sym);
    }
    if (missing.length) notice(`Not available on this server: ${missing.join(", ")}`);
  }
  if (list.length > maxSymbols) {
    notice(`The watchlist holds at most ${maxSymbols} symbols here; the rest were left out.`);
    list = list.slice(0, maxSymbols);
  }
  setWatchlist(list, list.join("\n") !== watchlist.join("\n"));
  if (changed) loadMeta();
}

// --- symbol metadata and sparkline history ----------------------------------------------

async function loadMeta() {
  let body;
  try {
    const response = await fetch("/api/v1/symbols", { cache: "no-store" });
    if (!response.ok) return;
    body = await response.json();
  } catch {
    return;
  }
  let replay = false;
  for (const s of Array.isArray(body.symbols) ? body.symbols : []) {
    if (!s || typeof s.symbol !== "string") continue;
    const name = typeof s.name === "string" ? s.name : "";
    meta.set(s.symbol, { name });
    if (s.feed_kind === "replay") replay = true;
    const state = market.symbols.get(s.symbol);
    if (state) {
      state.name = name;
      if (Number.isInteger(s.price_decimals)) state.decimals = s.price_decimals;
      state.version += 1;
      market.dirty.add(s.symbol);
    }
    view.setName(s.symbol, name);
  }
  $("data-label").textContent = replay ? "Replay" : "Simulated data";
  request();
}

const sparkQueue = [];
let sparkActive = 0;
function queueSparkHistory(sym) {
  if (!sparkQueue.includes(sym)) sparkQueue.push(sym);
  pumpSparkQueue();
}

async function fetchBars(sym, interval, limit) {
  const url = `/api/v1/bars?symbol=${encodeURIComponent(sym)}&interval=${interval}&limit=${limit}`;
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) return null;
  const body = await response.json();
  return Array.isArray(body.bars) ? body.bars.filter((b) => b && Number.isFinite(b.start_ts)) : null;
}

/** The bars of the latest bar's trading day (exchange time): a session sparkline shows one day. */
function sameDay(bars) {
  if (!bars.length) return bars;
  const day = fmt.exchangeDate(bars[bars.length - 1].start_ts);
  let i = bars.length - 1;
  while (i > 0 && fmt.exchangeDate(bars[i - 1].start_ts) === day) i -= 1;
  return bars.slice(i);
}

/** Session sparklines start from the minute bars, or the second bars while the session is young. */
async function pumpSparkQueue() {
  while (sparkActive < 4 && sparkQueue.length) {
    const sym = sparkQueue.shift();
    sparkActive += 1;
    try {
      let bars = await fetchBars(sym, "1m", 390);
      let intervalMs = 60_000;
      if (bars && bars.length < 20) {
        bars = await fetchBars(sym, "1s", 1_000);
        intervalMs = 1_000;
      }
      const s = market.symbols.get(sym);
      if (bars && s) {
        s.spark.seed(sameDay(bars), intervalMs);
        market.dirty.add(sym);
        request();
      }
    } catch {
      // the server went away; the reconnect queues the history again
    } finally {
      sparkActive -= 1;
    }
  }
}

// --- the watchlist ----------------------------------------------------------------------

function setWatchlist(list, save = true) {
  const before = new Set(watchlist);
  const after = new Set(list);
  const removed = watchlist.filter((s) => !after.has(s));
  const added = list.filter((s) => !before.has(s) || !market.symbols.has(s));
  watchlist = list;
  hook.watchlist = list.slice();
  if (removed.length) {
    conn.unwant(WATCH_CHANNELS, removed);
    for (const sym of removed) market.drop(sym);
  }
  for (const sym of added) {
    const s = market.get(sym);
    s.name = meta.get(sym)?.name ?? s.name;
  }
  view.setSymbols(list);
  for (const sym of added) view.setName(sym, market.get(sym).name);
  conn.want(WATCH_CHANNELS, list);
  if (serverSymbols !== null) for (const sym of added) queueSparkHistory(sym);
  if (save) prefs.saveWatchlist(list);
  if (!after.has(selected)) select(list[0] ?? null);
  else if (detail.sym !== selected) select(selected);
}

function select(sym) {
  selected = sym;
  if (sym !== null) prefs.saveSelected(sym);
  view.setSelected(sym);
  detail.select(sym);
  lastAnnounced = null;
  request();
}

function onRowAction(action, sym) {
  const i = watchlist.indexOf(sym);
  if (i < 0) return;
  if (action === "select") {
    select(sym);
  } else if (action === "remove") {
    const next = watchlist[i + 1] ?? watchlist[i - 1] ?? null;
    setWatchlist(watchlist.filter((s) => s !== sym));
    const focus = next !== null ? view.rowButton(next, "remove") : $("add-input");
    focus?.focus();
    liveMessage(`Removed ${sym}`);
  } else if (action === "up" || action === "down") {
    const j = action === "up" ? i - 1 : i + 1;
    if (j < 0 || j >= watchlist.length) return;
    const list = watchlist.slice();
    [list[i], list[j]] = [list[j], list[i]];
    setWatchlist(list);
    let focus = view.rowButton(sym, action);
    if (focus?.disabled) focus = view.rowButton(sym, action === "up" ? "down" : "up");
    focus?.focus();
    liveMessage(`${sym} moved to position ${j + 1} of ${list.length}`);
  }
}

function addSymbol(sym) {
  if (watchlist.includes(sym)) return;
  if (watchlist.length >= maxSymbols) {
    notice(`The watchlist is full (${maxSymbols} symbols).`);
    return;
  }
  setWatchlist([...watchlist, sym]);
  liveMessage(`Added ${sym}`);
}

// --- announcements (opt-in) --------------------------------------------------------------

let announcing = false;
let lastAnnounced = null; // {at, price}

function liveMessage(text) {
  const region = $("announcer");
  region.textContent = text;
}

function announce(now) {
  if (!announcing || selected === null) return;
  const s = market.symbols.get(selected);
  if (!s || s.last === null) return;
  const moved = lastAnnounced && Math.abs(s.last - lastAnnounced.price) / lastAnnounced.price >= ANNOUNCE_MOVE;
  const due = !lastAnnounced || (now - lastAnnounced.at >= ANNOUNCE_EVERY_MS && s.last !== lastAnnounced.price);
  if (!moved && !due) return;
  lastAnnounced = { at: now, price: s.last };
  let text = `${s.sym} ${fmt.price(s.last, s.decimals)}`;
  if (s.prevClose) {
    const diff = s.last - s.prevClose;
    const word = diff > 0 ? "up" : diff < 0 ? "down" : "unchanged";
    text += diff ? `, ${word} ${fmt.price(Math.abs(diff), s.decimals)}, ${fmt.percent((diff / s.prevClose) * 100)}` : `, ${word}`;
  }
  liveMessage(text);
  hook.announcements.push(text);
}

// --- views and controls -----------------------------------------------------------------

const view = new WatchlistView($("rows"), $("watchlist-scroll"), {
  market,
  hook,
  staleMs: STALE_MS,
  onAction: onRowAction,
  request,
});

const detail = new DetailView(
  {
    section: $("detail"),
    title: $("detail-symbol"),
    name: $("detail-name"),
    last: $("detail-last"),
    change: $("detail-change"),
    session: $("detail-session"),
    stats: {
      open: $("stat-open"),
      high: $("stat-high"),
      low: $("stat-low"),
      prev: $("stat-prev"),
      volume: $("stat-volume"),
    },
    canvas: $("chart"),
    readout: $("readout"),
    tape: $("tape-rows"),
    intervalButtons: [...document.querySelectorAll("[data-interval]")],
  },
  { market, conn, hook, interval: prefs.loadInterval(), request },
);
detail.onIntervalChange = prefs.saveInterval;

new SymbolCombobox(
  $("add-input"),
  $("add-list"),
  () =>
    (serverSymbols ?? [])
      .filter((sym) => !watchlist.includes(sym))
      .map((sym) => ({ symbol: sym, name: meta.get(sym)?.name ?? "" })),
  addSymbol,
);

theme.setupThemeToggle($("theme"));
theme.onChange(() => {
  view.repaintAll();
  detail.chart.dirty = true;
  request();
});

$("pause").addEventListener("click", (ev) => {
  paused = !paused;
  ev.currentTarget.setAttribute("aria-pressed", String(paused));
  document.body.classList.toggle("paused", paused);
  if (!paused) request();
});

$("announce").addEventListener("click", (ev) => {
  announcing = !announcing;
  ev.currentTarget.setAttribute("aria-pressed", String(announcing));
  lastAnnounced = null;
  if (announcing) request();
});

$("reconnect").addEventListener("click", () => conn.reconnectNow());

// Market time: the newest event's time (a simulated session may run faster than the clock),
// else the server's clock.
setInterval(() => {
  $("clock").textContent = `${fmt.time(market.latestTs || conn.now())} ET`;
}, 1_000);

setWatchlist(watchlist, false);
conn.start();
