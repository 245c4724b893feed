// Reference server for the benchmark: Node.js `ws` with batched frames, the way a careful
// Node developer writes it. Not a baseline that stockpush must beat by a factor: issue 5's
// moonshot is to match it. Same load as bench/baselines/naive.py (trades at a total rate,
// round-robin over N symbols, in bursts every 5 ms, stamped with the wall clock); each
// trade is encoded once, and each client gets one frame per burst holding its events.
//
//   node bench/baselines/node_ws/server.mjs --port 8002 --rate 10000 --symbols 100
import { parseArgs } from "node:util";
import { WebSocketServer } from "ws";

const { values } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8002" },
    rate: { type: "string" },
    symbols: { type: "string", default: "100" },
  },
});
const rate = Number(values.rate);
const count = Number(values.symbols);
if (!(rate > 0) || !(count > 0)) {
  console.error("usage: server.mjs --rate <trades/s> [--symbols N] [--port P] [--host H]");
  process.exit(2);
}

const names = Array.from({ length: count }, (_, i) => `S${String(i).padStart(4, "0")}`);
const index = new Map(names.map((name, i) => [name, i]));
const subscribers = names.map(() => new Set()); // per symbol: the clients' batches
const prices = new Array(count).fill(100.0);
const seqs = new Array(count).fill(0);

const wss = new WebSocketServer({ host: values.host, port: Number(values.port), path: "/v1/stream" });
wss.on("connection", (ws) => {
  const client = { ws, parts: [] };
  const joined = [];
  ws.on("message", (data) => {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message && message.op === "subscribe" && Array.isArray(message.symbols)) {
      for (const name of message.symbols) {
        const i = index.get(name);
        if (i !== undefined) {
          subscribers[i].add(client);
          joined.push(i);
        }
      }
    }
  });
  ws.on("close", () => {
    for (const i of joined) subscribers[i].delete(client);
  });
  ws.on("error", () => {});
});

// A deterministic generator, as the Python baseline's seeded random.Random.
let state = 1;
const coin = () => {
  state = (state * 1103515245 + 12345) & 0x7fffffff;
  return state & 1;
};

const intervalMs = 5;
let due = 0;
let next = 0;
let last = performance.now();
let symbol = 0;
next = last;

function burst() {
  const now = performance.now();
  due += (rate * (now - last)) / 1000;
  last = now;
  const n = Math.floor(due);
  due -= n;
  const ts = Date.now();
  const pending = [];
  for (let k = 0; k < n; k++) {
    const i = symbol;
    prices[i] = Math.round(Math.max(1, prices[i] + (coin() ? 0.01 : -0.01)) * 100) / 100;
    seqs[i] += 1;
    const wire = `{"ch":"trades","sym":"${names[i]}","seq":${seqs[i]},"ts":${ts},"price":${prices[i]},"size":100}`;
    for (const client of subscribers[i]) {
      if (client.parts.length === 0) pending.push(client);
      client.parts.push(wire);
    }
    symbol = (symbol + 1) % count;
  }
  for (const client of pending) {
    const frame = `[${client.parts.join(",")}]`;
    client.parts = [];
    if (client.ws.readyState === 1) client.ws.send(frame);
  }
  next = Math.max(next + intervalMs, performance.now());
  setTimeout(burst, next - performance.now());
}
setTimeout(burst, intervalMs);

const stop = () => {
  wss.close();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
