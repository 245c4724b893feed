// The client rule of the protocol, per stream: every event's seq follows the last one
// (or names it in `prev_seq`), within the epoch set by the latest snapshot, ack or reset.
// Pure bookkeeping; the connection decides what to do about a gap.

export const OK = "ok";
export const DUPLICATE = "duplicate"; // seq already seen: drop it
export const GAP = "gap"; // events are missing: resume the stream
export const ORPHAN = "orphan"; // an event before its stream's snapshot
export const SKIP = "skip"; // the stream is being re-synchronised; a replay follows

export function streamKey(ch, sym) {
  return `${ch}\n${sym}`;
}

export class SequenceTracker {
  constructor() {
    /** key -> {ch, sym, epoch, seq (null until a snapshot), recovering} */
    this.streams = new Map();
    this.gaps = []; // {ch, sym, from, to}: the last 100
    this.gapCount = 0;
    this.duplicates = 0;
    this.orphans = 0;
    this.events = 0;
  }

  /** The stream restarts from a snapshot that is on its way (subscribe, reset, lost resume). */
  expectSnapshot(ch, sym, epoch) {
    this.streams.set(streamKey(ch, sym), { ch, sym, epoch, seq: null, recovering: false });
  }

  snapshot(ch, sym, epoch, seq) {
    this.streams.set(streamKey(ch, sym), { ch, sym, epoch, seq, recovering: false });
  }

  /** A resume was granted: the replay continues right after our last seq. */
  recovered(ch, sym) {
    const s = this.streams.get(streamKey(ch, sym));
    if (s) s.recovering = false;
  }

  /** We asked to resume this stream after a gap: its events until the ack are replayed anyway. */
  markRecovering(ch, sym) {
    const s = this.streams.get(streamKey(ch, sym));
    if (s) s.recovering = true;
  }

  forget(ch, sym) {
    this.streams.delete(streamKey(ch, sym));
  }

  /** Judge one event of a `data` frame. */
  event(e) {
    this.events += 1;
    const s = this.streams.get(streamKey(e.ch, e.sym));
    if (!s || s.seq === null) {
      this.orphans += 1;
      return ORPHAN;
    }
    if (s.recovering) return SKIP;
    if (e.seq <= s.seq) {
      this.duplicates += 1;
      return DUPLICATE;
    }
    if (e.seq !== s.seq + 1 && e.prev_seq !== s.seq) {
      this.gapCount += 1;
      this.gaps.push({ ch: e.ch, sym: e.sym, from: s.seq, to: e.seq });
      if (this.gaps.length > 100) this.gaps.shift();
      return GAP;
    }
    s.seq = e.seq;
    return OK;
  }

  /** Where each stream stands, for the resume form of `subscribe`. */
  position(ch, sym) {
    const s = this.streams.get(streamKey(ch, sym));
    if (!s || s.seq === null) return null;
    return { ch, sym, epoch: s.epoch, after_seq: s.seq };
  }

  /** A plain copy for tests: {"trades AAPL": {epoch, seq}}. */
  toJSON() {
    const out = {};
    for (const s of this.streams.values()) out[`${s.ch} ${s.sym}`] = { epoch: s.epoch, seq: s.seq };
    return out;
  }
}
