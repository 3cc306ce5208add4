/**
 * The keyed listener's memory of the SYN tokens it answered: a token is answered only from
 * the tuple that first used it (the client's retransmissions are answered, a captured SYN
 * sent again from elsewhere is not), and the handshake's ACK is believed only from that
 * tuple, echoing the ISN made for that token. This is the only state a keyed listener keeps
 * per handshake, and only a key holder can make it keep any.
 *
 * The cache lives in a SharedArrayBuffer so that the stacks of a sharded program share one:
 * the device steers a flow to a shard by its ports, so a replay from another port would reach
 * another shard, which must know the token too. Entries are found by nonce (the client's ISN:
 * the ACK carries it back as seq - 1) in a set-associative table: a nonce hashes to a set of
 * `WAYS` entries, each set guarded by its own lock (an `Atomics` spin lock around a few
 * reads and writes). An entry is needed while its token can still pass the slot check, plus
 * one slot for the ACK (`STALE_AFTER_SLOTS`); a full set overwrites its oldest entry even if
 * it is still needed, which is counted (`liveOverwrites`): that token could then be answered
 * once more, from anywhere.
 */
import type { SegmentTuple } from "../stack/segment-writer.js";
import { TOKEN_SLOT_SLACK, type TunnelKey, tokenSlotOf } from "./tunnel-key.js";

/** Slots after its token's slot that an entry is kept: the token's life, then one for the ACK. */
export const STALE_AFTER_SLOTS = TOKEN_SLOT_SLACK + 1;

/** What `ReplayCache.admitSyn` says about a SYN with a valid token. */
export const SynReplay = {
  /** First seen: answer it. */
  fresh: 0,
  /** Seen before from the same tuple (the client retransmitting): answer it again. */
  again: 1,
  /** Seen before from another tuple: a replay, stay silent. */
  replay: 2,
} as const;

/** Entries per set. */
const WAYS = 4;
/** Header words: insertion counter, number of sets. */
const HEADER = 2;
// Words of an entry.
const USED = 0;
const ORDER = 1;
const NONCE = 2;
const TSVAL = 3;
const PREVIOUS = 4;
const HAS_PREVIOUS = 5;
const SLOT = 6;
const FAMILY = 7;
const PORT = 8;
const ADDRESS = 9;
const ENTRY = 13;

export class ReplayCache {
  private readonly words: Int32Array;
  private readonly sets: number;
  private readonly setShift: number;
  private readonly entries: number;
  /** Entries this instance overwrote while still needed (the cache was too small). */
  liveOverwrites = 0;

  /**
   * Memory for a cache of at least `capacity` entries (a power-of-two number of sets of
   * `WAYS`), to hand to `new ReplayCache(memory)` in every stack that shares it.
   */
  static memory(capacity: number): SharedArrayBuffer {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`replay cache capacity must be a positive integer, got ${capacity}`);
    const sets = 2 ** Math.ceil(Math.log2(Math.max(1, Math.ceil(capacity / WAYS))));
    const memory = new SharedArrayBuffer(4 * (HEADER + sets + sets * WAYS * ENTRY));
    new Int32Array(memory)[1] = sets;
    return memory;
  }

  /** `memory`: from `ReplayCache.memory`, or a capacity to make a cache of its own. */
  constructor(memory: SharedArrayBuffer | number) {
    const buffer = typeof memory === "number" ? ReplayCache.memory(memory) : memory;
    this.words = new Int32Array(buffer);
    this.sets = this.words[1];
    if (!(this.sets >= 1) || (this.sets & (this.sets - 1)) !== 0)
      throw new RangeError("replay cache memory was not made by ReplayCache.memory");
    this.setShift = 32 - Math.log2(this.sets);
    this.entries = HEADER + this.sets;
  }

  /** Entries the cache holds (scans it all: for tests and stats, not the packet path). */
  get size(): number {
    let n = 0;
    for (let e = 0; e < this.sets * WAYS; e++) n += this.words[this.entries + e * ENTRY + USED];
    return n;
  }

  /** Entries it can hold. */
  get capacity(): number {
    return this.sets * WAYS;
  }

  /**
   * A SYN from `t`'s remote end whose token (`nonce`, `tsval`, made in `slot`) is valid at
   * `now`: records it if new, and says whether to answer (`SynReplay`).
   */
  admitSyn(t: SegmentTuple, nonce: number, tsval: number, slot: number, now: number): number {
    const set = this.setOf(nonce);
    this.lock(set);
    try {
      const w = this.words;
      const e = this.find(set, nonce, now);
      if (e >= 0) {
        if (!this.sameTuple(e, t)) return SynReplay.replay;
        if (w[e + TSVAL] !== (tsval | 0)) {
          // A retransmission that crossed into another slot: its token (and ISN) changed.
          w[e + PREVIOUS] = w[e + TSVAL];
          w[e + HAS_PREVIOUS] = 1;
          w[e + TSVAL] = tsval | 0;
          w[e + SLOT] = Math.max(w[e + SLOT], slot);
        }
        return SynReplay.again;
      }
      this.insert(set, t, nonce, tsval, slot, now);
      return SynReplay.fresh;
    } finally {
      this.unlock(set);
    }
  }

  /**
   * Whether a segment from `t`'s remote end with seq `nonce + 1` and ack `ack` completes a
   * keyed handshake on `port`: we answered a SYN with ISN `nonce` from that same tuple
   * recently, and `ack` is the ISN of our answer + 1.
   */
  provesAck(
    t: SegmentTuple,
    nonce: number,
    ack: number,
    key: TunnelKey,
    port: number,
    now: number,
  ): boolean {
    const set = this.setOf(nonce);
    let tsval: number;
    let previous = -1;
    this.lock(set);
    try {
      const e = this.find(set, nonce, now);
      if (e < 0 || !this.sameTuple(e, t)) return false;
      tsval = this.words[e + TSVAL] >>> 0;
      if (this.words[e + HAS_PREVIOUS] === 1) previous = this.words[e + PREVIOUS] >>> 0;
    } finally {
      this.unlock(set);
    }
    const isn = (ack - 1) >>> 0;
    if (key.synAckIsn(port, nonce >>> 0, tsval) === isn) return true;
    return previous >= 0 && key.synAckIsn(port, nonce >>> 0, previous) === isn;
  }

  private setOf(nonce: number): number {
    return this.sets === 1 ? 0 : Math.imul(nonce | 0, 0x9e3779b1) >>> this.setShift;
  }

  /** The word index of the live entry for `nonce` in `set`, else -1. */
  private find(set: number, nonce: number, now: number): number {
    const w = this.words;
    const current = tokenSlotOf(now);
    const first = this.entries + set * WAYS * ENTRY;
    for (let way = 0; way < WAYS; way++) {
      const e = first + way * ENTRY;
      if (
        w[e + USED] === 1 &&
        w[e + NONCE] === (nonce | 0) &&
        current - w[e + SLOT] <= STALE_AFTER_SLOTS
      )
        return e;
    }
    return -1;
  }

  /** Writes a new entry into `set`: a free or stale way, else the oldest (counted). */
  private insert(
    set: number,
    t: SegmentTuple,
    nonce: number,
    tsval: number,
    slot: number,
    now: number,
  ): void {
    const w = this.words;
    const current = tokenSlotOf(now);
    const first = this.entries + set * WAYS * ENTRY;
    let victim = -1;
    let oldest = -1;
    for (let way = 0; way < WAYS && victim < 0; way++) {
      const e = first + way * ENTRY;
      if (w[e + USED] === 0 || current - w[e + SLOT] > STALE_AFTER_SLOTS) victim = e;
      else if (oldest < 0 || ((w[e + ORDER] - w[oldest + ORDER]) | 0) < 0) oldest = e;
    }
    if (victim < 0) {
      victim = oldest;
      this.liveOverwrites++;
    }
    w[victim + USED] = 1;
    w[victim + ORDER] = Atomics.add(w, 0, 1);
    w[victim + NONCE] = nonce | 0;
    w[victim + TSVAL] = tsval | 0;
    w[victim + HAS_PREVIOUS] = 0;
    w[victim + SLOT] = slot;
    w[victim + FAMILY] = t.family;
    w[victim + PORT] = t.remotePort;
    w[victim + ADDRESS] = t.r0 | 0;
    w[victim + ADDRESS + 1] = t.r1 | 0;
    w[victim + ADDRESS + 2] = t.r2 | 0;
    w[victim + ADDRESS + 3] = t.r3 | 0;
  }

  private sameTuple(e: number, t: SegmentTuple): boolean {
    const w = this.words;
    return (
      w[e + FAMILY] === t.family &&
      w[e + PORT] === t.remotePort &&
      w[e + ADDRESS] === (t.r0 | 0) &&
      w[e + ADDRESS + 1] === (t.r1 | 0) &&
      w[e + ADDRESS + 2] === (t.r2 | 0) &&
      w[e + ADDRESS + 3] === (t.r3 | 0)
    );
  }

  /** Takes the lock of `set` (held for a few reads and writes, so spinning is cheap). */
  private lock(set: number): void {
    const at = HEADER + set;
    while (Atomics.compareExchange(this.words, at, 0, 1) !== 0) {}
  }

  private unlock(set: number): void {
    Atomics.store(this.words, HEADER + set, 0);
  }
}
