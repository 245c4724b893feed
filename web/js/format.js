// Number and time formatting. Every function returns plain text, meant for textContent.

export const DASH = "\u2013"; // shown where there is no value yet
const MINUS = "\u2212"; // a real minus sign: as wide as "+" in tabular numerals
export const EXCHANGE_TZ = "America/New_York";

const fixed = new Map();
const signed = new Map();

function cached(map, decimals, options) {
  let format = map.get(decimals);
  if (!format) {
    format = new Intl.NumberFormat(undefined, {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
      ...options,
    });
    map.set(decimals, format);
  }
  return format;
}

function minus(text) {
  return text.replace("-", MINUS);
}

/** A price with the symbol's decimals: "1,234.50". */
export function price(value, decimals) {
  if (value == null || !Number.isFinite(value)) return DASH;
  return minus(cached(fixed, decimals).format(value));
}

/** A signed change: "+1.23", "−0.40", "0.00". */
export function change(value, decimals) {
  if (value == null || !Number.isFinite(value)) return DASH;
  return minus(cached(signed, decimals, { signDisplay: "exceptZero" }).format(value));
}

/** A signed percentage: "+0.65%". */
export function percent(value) {
  if (value == null || !Number.isFinite(value)) return DASH;
  return `${change(value, 2)}%`;
}

const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 2 });
const integerFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** Volume for a narrow column: "1.23M". */
export function compact(value) {
  return value == null ? DASH : compactFormat.format(value);
}

/** The full number, for a tooltip: "1,234,567". */
export function integer(value) {
  return value == null ? DASH : integerFormat.format(value);
}

const clockFormat = new Intl.DateTimeFormat("en-US", {
  timeZone: EXCHANGE_TZ,
  hour12: false,
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const clockMsFormat = new Intl.DateTimeFormat("en-US", {
  timeZone: EXCHANGE_TZ,
  hour12: false,
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  fractionalSecondDigits: 3,
});
const shortFormat = new Intl.DateTimeFormat("en-US", {
  timeZone: EXCHANGE_TZ,
  hour12: false,
  hour: "2-digit",
  minute: "2-digit",
});
const localFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

const dateFormat = new Intl.DateTimeFormat("en-CA", { timeZone: EXCHANGE_TZ, year: "numeric", month: "2-digit", day: "2-digit" });

/** The exchange's calendar date of a timestamp: "2025-03-03". */
export function exchangeDate(ts) {
  return dateFormat.format(ts);
}

/** Exchange time of a Unix-ms timestamp: "10:31:02" (with ms: "10:31:02.250"). */
export function time(ts, withMs = false) {
  return (withMs ? clockMsFormat : clockFormat).format(ts);
}

/** Exchange time without seconds, for axis labels: "10:31". */
export function shortTime(ts) {
  return shortFormat.format(ts);
}

/** The viewer's local date and time, for tooltips. */
export function localTime(ts) {
  return localFormat.format(ts);
}
