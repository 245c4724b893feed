// Minimal live table: a client of /v1/stream like any other. Server strings only ever reach
// the page through textContent, never innerHTML.
const rows = new Map();
const statusEl = document.getElementById("status");
const tbody = document.getElementById("rows");

function cell(tr, i) { return tr.children[i]; }

function row(sym) {
  let tr = rows.get(sym);
  if (!tr) {
    tr = document.createElement("tr");
    for (let i = 0; i < 6; i++) tr.appendChild(document.createElement("td"));
    cell(tr, 0).textContent = sym;
    tr.dataset.symbol = sym;
    tbody.appendChild(tr);
    rows.set(sym, { tr, decimals: 2, prevClose: null });
  }
  return rows.get(sym);
}

function fmt(r, price) { return price == null ? "–" : price.toFixed(r.decimals); }

function showLast(r, price) {
  cell(r.tr, 1).textContent = fmt(r, price);
  if (price == null || r.prevClose == null) return;
  const change = price - r.prevClose;
  const pct = (change / r.prevClose) * 100;
  const c = cell(r.tr, 2);
  c.textContent = `${change >= 0 ? "▲ +" : "▼ "}${change.toFixed(r.decimals)} (${pct.toFixed(2)}%)`;
  c.className = change >= 0 ? "up" : "down";
}

function onSnapshot(m) {
  const r = row(m.sym);
  r.decimals = m.data.price_decimals ?? r.decimals;
  r.prevClose = m.data.prev_close ?? r.prevClose;
  if (m.ch === "trades") showLast(r, m.data.last ?? null);
  if (m.data.volume != null) cell(r.tr, 5).textContent = m.data.volume.toLocaleString();
  if (m.ch === "quotes" && m.data.bid != null) {
    cell(r.tr, 3).textContent = `${fmt(r, m.data.bid)} × ${m.data.bid_size}`;
    cell(r.tr, 4).textContent = `${fmt(r, m.data.ask)} × ${m.data.ask_size}`;
  }
}

function onEvent(e) {
  const r = row(e.sym);
  if (e.ch === "trades") {
    showLast(r, e.price);
    r.volume = (r.volume ?? 0) + e.size;
  } else if (e.ch === "quotes") {
    cell(r.tr, 3).textContent = `${fmt(r, e.bid)} × ${e.bid_size}`;
    cell(r.tr, 4).textContent = `${fmt(r, e.ask)} × ${e.ask_size}`;
  }
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`);
  ws.onopen = () => { statusEl.textContent = "live"; };
  ws.onmessage = (msg) => {
    const m = JSON.parse(msg.data);
    if (m.type === "hello") ws.send(JSON.stringify({ op: "subscribe", id: 1, symbols: m.symbols }));
    else if (m.type === "snapshot") onSnapshot(m);
    else if (m.type === "data") m.events.forEach(onEvent);
  };
  ws.onclose = (ev) => {
    statusEl.textContent = `reconnecting (closed ${ev.code})`;
    setTimeout(connect, 1000 + Math.random() * 1000);
  };
}

connect();
