// What the page remembers: the watchlist (localStorage, or ?symbols= in the URL), the
// selected symbol, the chart interval and the theme. Storage may be unavailable (privacy
// modes): then nothing is remembered and nothing breaks.

const WATCHLIST = "stockpush.watchlist";
const SELECTED = "stockpush.selected";
const INTERVAL = "stockpush.interval";
const THEME = "stockpush.theme";
export const MAX_SYMBOL_LENGTH = 32;

function read(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage full or disabled: the page works without it
  }
}

/** A symbol as the user typed it: trimmed; a plain ticker is upper-cased. */
export function normalize(text) {
  const sym = String(text).trim().slice(0, MAX_SYMBOL_LENGTH);
  return /^[A-Za-z0-9.\-]+$/.test(sym) ? sym.toUpperCase() : sym;
}

function unique(list) {
  return [...new Set(list.map(normalize).filter(Boolean))];
}

/** The watchlist to start with: from the URL, else as saved, else null (use the default). */
export function loadWatchlist() {
  const param = new URLSearchParams(location.search).get("symbols");
  if (param !== null) return unique(param.split(","));
  const saved = read(WATCHLIST);
  if (saved === null) return null;
  try {
    const list = JSON.parse(saved);
    return Array.isArray(list) ? unique(list.filter((s) => typeof s === "string")) : null;
  } catch {
    return null;
  }
}

/** Remember the list; when the URL named the symbols, keep the URL in step so a reload agrees. */
export function saveWatchlist(list) {
  write(WATCHLIST, JSON.stringify(list));
  const url = new URL(location.href);
  if (url.searchParams.has("symbols")) {
    url.searchParams.set("symbols", list.join(","));
    history.replaceState(null, "", url);
  }
}

export const loadSelected = () => read(SELECTED);
export const saveSelected = (sym) => write(SELECTED, sym);
export const loadInterval = () => (read(INTERVAL) === "1m" ? "1m" : "1s");
export const saveInterval = (interval) => write(INTERVAL, interval);
export const loadTheme = () => read(THEME) || "auto";
export const saveTheme = (mode) => write(THEME, mode);
