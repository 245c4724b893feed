// Light, dark, or the system's choice; canvas code reads its colours from here.

import * as prefs from "./prefs.js";

const MODES = ["auto", "light", "dark"];
const LABELS = { auto: "Theme: system", light: "Theme: light", dark: "Theme: dark" };

/** Colours resolved from the CSS custom properties of the current theme. */
export const colors = {};
const listeners = new Set();

function readColors() {
  const style = getComputedStyle(document.documentElement);
  for (const name of ["fg", "muted", "bg", "surface", "grid", "up", "down", "flat", "candle-up", "candle-down", "baseline", "crosshair"]) {
    colors[name] = style.getPropertyValue(`--${name}`).trim();
  }
  for (const fn of listeners) fn();
}

export function onChange(fn) {
  listeners.add(fn);
}

function apply(mode) {
  if (mode === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = mode;
  readColors();
}

/** Wire the toggle button: system -> light -> dark -> system. */
export function setupThemeToggle(button) {
  let mode = prefs.loadTheme();
  if (!MODES.includes(mode)) mode = "auto";
  const show = () => {
    button.textContent = LABELS[mode];
    button.dataset.mode = mode;
  };
  apply(mode);
  show();
  button.addEventListener("click", () => {
    mode = MODES[(MODES.indexOf(mode) + 1) % MODES.length];
    prefs.saveTheme(mode);
    apply(mode);
    show();
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", readColors);
}

export const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");
