/**
 * Which connection makes room when the table is full and a new client proves its cookie.
 * Without eviction, whoever fills the table first keeps it (one ACK per connection every
 * 180 s is enough), and every later client is refused: a lock-out.
 *
 * Only accepted (passive) connections are ever evicted, in this order:
 * 1. connections that never carried a datagram either way, established at least
 *    `EVICT_NO_DATA_AFTER_MS` ago, oldest first: a real client sends its first datagram
 *    within a round trip or two of the handshake, a table-filler sends none;
 * 2. connections idle (no datagram or segment either way) for at least `EVICT_IDLE_AFTER_MS`,
 *    idlest first.
 * A connection in use is never evicted: when none qualifies, the newcomer is refused.
 *
 * Finding candidates walks the whole table, so it is done at most once per
 * `RESCAN_INTERVAL_MS`, keeping the best `BATCH` candidates; each eviction re-checks its
 * candidate (it may have carried data or closed since). A flood of handshakes against a full
 * table therefore costs at most a few table walks per second.
 */
import type { ConnectionTable } from "./conn-table.js";
import { type Socket, SocketState } from "./socket.js";

/** A connection that never carried data is evictable this long after its handshake (ms). */
export const EVICT_NO_DATA_AFTER_MS = 5_000;
/** A connection that carried data is evictable after this long without traffic (ms). */
export const EVICT_IDLE_AFTER_MS = 30_000;
const RESCAN_INTERVAL_MS = 250;
const BATCH = 256;

/** Puts every never-used candidate before every idle one (clock spans are far below this). */
const NO_DATA_FIRST = 1e12;

/** Eviction rank: lower goes first; `Infinity` means not evictable. */
function rank(s: Socket, now: number): number {
  if (!s.passive || s.state !== SocketState.established) return Number.POSITIVE_INFINITY;
  const c = s.counters;
  if (c.datagramsReceived === 0 && c.datagramsSent === 0) {
    const age = now - s.establishedAt;
    return age >= EVICT_NO_DATA_AFTER_MS ? -NO_DATA_FIRST - age : Number.POSITIVE_INFINITY;
  }
  const idle = now - Math.max(s.lastReceived, s.lastSent);
  return idle >= EVICT_IDLE_AFTER_MS ? -idle : Number.POSITIVE_INFINITY;
}

export class Evictor {
  private candidates: Socket[] = [];
  private next = 0;
  private lastScan = Number.NEGATIVE_INFINITY;
  // The scan's bounded max-heap of the best candidates (worst on top), reused.
  private readonly heapS: Socket[] = [];
  private readonly heapR: number[] = [];

  constructor(private readonly table: ConnectionTable) {}

  /** The connection to evict now, or null when none qualifies (the newcomer is refused). */
  victim(now: number): Socket | null {
    return this.hasVictim(now) ? this.candidates[this.next++] : null;
  }

  /** Whether `victim` would find one now (without using it up). */
  hasVictim(now: number): boolean {
    for (let pass = 0; pass < 2; pass++) {
      while (this.next < this.candidates.length) {
        if (rank(this.candidates[this.next], now) !== Number.POSITIVE_INFINITY) return true;
        this.next++;
      }
      if (!this.rescan(now)) return false;
    }
    return false;
  }

  /** Walks the table for the best candidates, unless it did so very recently. */
  private rescan(now: number): boolean {
    if (now - this.lastScan < RESCAN_INTERVAL_MS) return false;
    this.lastScan = now;
    const hs = this.heapS;
    const hr = this.heapR;
    hs.length = 0;
    hr.length = 0;
    this.table.forEach((s) => {
      const r = rank(s, now);
      if (r === Number.POSITIVE_INFINITY) return;
      if (hs.length < BATCH) {
        hs.push(s);
        hr.push(r);
        this.siftUp(hs.length - 1);
      } else if (r < hr[0]) {
        hs[0] = s;
        hr[0] = r;
        this.siftDown(0);
      }
    });
    const order = hs.map((_, i) => i).sort((a, b) => hr[a] - hr[b]);
    this.candidates = order.map((i) => hs[i]);
    this.next = 0;
    hs.length = 0; // drop references to sockets
    return this.candidates.length > 0;
  }

  private siftUp(i: number): void {
    const hr = this.heapR;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (hr[parent] >= hr[i]) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private siftDown(i: number): void {
    const hr = this.heapR;
    const n = hr.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let top = i;
      if (l < n && hr[l] > hr[top]) top = l;
      if (r < n && hr[r] > hr[top]) top = r;
      if (top === i) return;
      this.swap(i, top);
      i = top;
    }
  }

  private swap(a: number, b: number): void {
    const hs = this.heapS;
    const hr = this.heapR;
    const s = hs[a];
    hs[a] = hs[b];
    hs[b] = s;
    const r = hr[a];
    hr[a] = hr[b];
    hr[b] = r;
  }
}
