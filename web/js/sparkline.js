// Crisp canvases on any screen, and the watchlist's session sparkline.

import { colors } from "./theme.js";

/** Size a canvas's backing store to its CSS size times devicePixelRatio; return a context in CSS px. */
export function fitCanvas(canvas, cssWidth, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(cssWidth * dpr));
  const height = Math.max(1, Math.round(cssHeight * dpr));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  return ctx;
}

/** A coordinate on the device-pixel grid, centred for 1-px lines. */
export function crisp(v) {
  const dpr = window.devicePixelRatio || 1;
  return (Math.floor(v * dpr) + 0.5) / dpr;
}

export const SPARK_WIDTH = 88;
export const SPARK_HEIGHT = 26;

/** Closes since the session opened, a dotted previous-close baseline, coloured by the day's sign. */
export function drawSparkline(canvas, spark, prevClose) {
  const w = SPARK_WIDTH;
  const h = SPARK_HEIGHT;
  const ctx = fitCanvas(canvas, w, h);
  const closes = spark.closes;
  const n = closes.length;
  if (!n) return;
  let lo = Math.min(...closes);
  let hi = Math.max(...closes);
  if (prevClose !== null) {
    lo = Math.min(lo, prevClose);
    hi = Math.max(hi, prevClose);
  }
  if (hi === lo) {
    hi += 1;
    lo -= 1;
  }
  const pad = 2;
  const y = (v) => pad + ((hi - v) / (hi - lo)) * (h - 2 * pad);
  const x = (i) => (n === 1 ? w - pad : pad + (i / (n - 1)) * (w - 2 * pad));
  if (prevClose !== null) {
    ctx.strokeStyle = colors.baseline;
    ctx.lineWidth = 1;
    ctx.setLineDash([2, 2]);
    ctx.beginPath();
    const yb = crisp(y(prevClose));
    ctx.moveTo(0, yb);
    ctx.lineTo(w, yb);
    ctx.stroke();
    ctx.setLineDash([]);
  }
  const last = closes[n - 1];
  const up = prevClose === null || last >= prevClose;
  ctx.strokeStyle = up ? colors.up : colors.down;
  ctx.lineWidth = 1.25;
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(x(0), y(closes[0]));
  for (let i = 1; i < n; i++) ctx.lineTo(x(i), y(closes[i]));
  ctx.stroke();
  ctx.fillStyle = ctx.strokeStyle;
  ctx.beginPath();
  ctx.arc(x(n - 1), y(last), 1.75, 0, 2 * Math.PI);
  ctx.fill();
}
