/**
 * The connection table: O(1) lookup by 4-tuple without allocating per lookup.
 *
 * Keys are a 32-bit hash of the tuple (a small integer, so the Map neither boxes nor hashes a
 * string); sockets whose tuples share a hash are chained through `nextInBucket`, and every hit
 * is confirmed against the full tuple.
 */
import type { Socket } from "./socket.js";
import { hashTuple } from "./tuple.js";

export class ConnectionTable {
  private readonly buckets = new Map<number, Socket>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Finds an IPv4 connection; addresses as int32. */
  find4(remote: number, local: number, remotePort: number, localPort: number): Socket | null {
    let s: Socket | null =
      this.buckets.get(hashTuple(remote, 0, 0, 0, remotePort, localPort)) ?? null;
    while (s !== null) {
      if (
        s.r0 === remote &&
        s.remotePort === remotePort &&
        s.localPort === localPort &&
        s.l0 === local &&
        s.family === 4
      )
        return s;
      s = s.nextInBucket;
    }
    return null;
  }

  /** Finds an IPv6 connection; addresses as four words (signed or unsigned). */
  find6(
    remote: ArrayLike<number>,
    local: ArrayLike<number>,
    remotePort: number,
    localPort: number,
  ): Socket | null {
    const r0 = remote[0] | 0;
    const r1 = remote[1] | 0;
    const r2 = remote[2] | 0;
    const r3 = remote[3] | 0;
    let s: Socket | null =
      this.buckets.get(hashTuple(r0, r1, r2, r3, remotePort, localPort)) ?? null;
    while (s !== null) {
      if (
        s.r3 === r3 &&
        s.remotePort === remotePort &&
        s.localPort === localPort &&
        s.r0 === r0 &&
        s.r1 === r1 &&
        s.r2 === r2 &&
        s.family === 6 &&
        s.l0 === (local[0] | 0) &&
        s.l1 === (local[1] | 0) &&
        s.l2 === (local[2] | 0) &&
        s.l3 === (local[3] | 0)
      )
        return s;
      s = s.nextInBucket;
    }
    return null;
  }

  /** Adds a socket (its tuple must not be in the table). */
  insert(s: Socket): void {
    const head = this.buckets.get(s.hash);
    s.nextInBucket = head ?? null;
    this.buckets.set(s.hash, s);
    this.count++;
  }

  /** Removes a socket; a no-op when it is not in the table. */
  remove(s: Socket): void {
    let prev: Socket | null = null;
    let cur = this.buckets.get(s.hash) ?? null;
    while (cur !== null && cur !== s) {
      prev = cur;
      cur = cur.nextInBucket;
    }
    if (cur === null) return;
    if (prev === null) {
      if (s.nextInBucket === null) this.buckets.delete(s.hash);
      else this.buckets.set(s.hash, s.nextInBucket);
    } else prev.nextInBucket = s.nextInBucket;
    s.nextInBucket = null;
    this.count--;
  }

  /** Every socket, as a snapshot array (safe to close sockets while walking it). */
  snapshot(): Socket[] {
    const out: Socket[] = [];
    for (const head of this.buckets.values())
      for (let s: Socket | null = head; s !== null; s = s.nextInBucket) out.push(s);
    return out;
  }

  /** Calls `fn` for every socket. `fn` must not remove sockets (collect them instead). */
  forEach(fn: (s: Socket) => void): void {
    for (const head of this.buckets.values())
      for (let s: Socket | null = head; s !== null; s = s.nextInBucket) fn(s);
  }
}
