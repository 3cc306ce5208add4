/**
 * The keyed listener's memory of the SYN tokens it answered: a token is answered only from
 * the tuple that first used it (the client's retransmissions are answered, a captured SYN
 * sent again from elsewhere is not), and the handshake's ACK is believed only from that
 * tuple, echoing the ISN made for that token. This is the only state a keyed listener keeps
 * per handshake, and only a key holder can make it keep any.
 *
 * Entries are kept in a ring in arrival order and found by nonce (the client's ISN: the ACK
 * carries it back as seq - 1). An entry is needed while its token can still pass the slot
 * check, plus one slot for the ACK (`STALE_AFTER_SLOTS`); a full ring overwrites its oldest
 * entry even if it is still needed, which is counted (`liveOverwrites`): that token could then
 * be answered once more, from anywhere.
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

export class ReplayCache {
  private readonly byNonce = new Map<number, number>();
  private readonly nonce: Uint32Array;
  private readonly tsval: Uint32Array;
  /** The TSval of the token before the last one from the same tuple (slot change), or -1. */
  private readonly previousTsval: Float64Array;
  private readonly slot: Int32Array;
  private readonly family: Uint8Array;
  private readonly address: Int32Array;
  private readonly port: Uint16Array;
  private readonly used: Uint8Array;
  private next = 0;
  /** Entries overwritten while still needed (the ring was too small for the SYN rate). */
  liveOverwrites = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`replay cache capacity must be a positive integer, got ${capacity}`);
    this.nonce = new Uint32Array(capacity);
    this.tsval = new Uint32Array(capacity);
    this.previousTsval = new Float64Array(capacity);
    this.slot = new Int32Array(capacity);
    this.family = new Uint8Array(capacity);
    this.address = new Int32Array(4 * capacity);
    this.port = new Uint16Array(capacity);
    this.used = new Uint8Array(capacity);
  }

  /** Entries in the ring (live or stale). */
  get size(): number {
    return this.byNonce.size;
  }

  /**
   * A SYN from `t`'s remote end whose token (`nonce`, `tsval`, made in `slot`) is valid at
   * `now`: records it if new, and says whether to answer (`SynReplay`).
   */
  admitSyn(t: SegmentTuple, nonce: number, tsval: number, slot: number, now: number): number {
    const i = this.live(nonce, now);
    if (i >= 0) {
      if (!this.sameTuple(i, t)) return SynReplay.replay;
      if (this.tsval[i] !== tsval >>> 0) {
        // A retransmission that crossed into another slot: its token (and ISN) changed.
        this.previousTsval[i] = this.tsval[i];
        this.tsval[i] = tsval;
        this.slot[i] = Math.max(this.slot[i], slot);
      }
      return SynReplay.again;
    }
    this.insert(t, nonce, tsval, slot, now);
    return SynReplay.fresh;
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
    const i = this.live(nonce, now);
    if (i < 0 || !this.sameTuple(i, t)) return false;
    const isn = (ack - 1) >>> 0;
    if (key.synAckIsn(port, nonce, this.tsval[i]) === isn) return true;
    const previous = this.previousTsval[i];
    return previous >= 0 && key.synAckIsn(port, nonce, previous) === isn;
  }

  /** The index of the entry for `nonce` that is still needed at `now`, else -1. */
  private live(nonce: number, now: number): number {
    const i = this.byNonce.get(nonce >>> 0);
    if (i === undefined) return -1;
    return tokenSlotOf(now) - this.slot[i] > STALE_AFTER_SLOTS ? -1 : i;
  }

  private insert(t: SegmentTuple, nonce: number, tsval: number, slot: number, now: number): void {
    const key = nonce >>> 0;
    const stale = this.byNonce.get(key);
    if (stale !== undefined) this.byNonce.delete(key);
    const i = this.next;
    this.next = (i + 1) % this.capacity;
    if (this.used[i] === 1) {
      if (tokenSlotOf(now) - this.slot[i] <= STALE_AFTER_SLOTS) this.liveOverwrites++;
      const old = this.nonce[i];
      if (this.byNonce.get(old) === i) this.byNonce.delete(old);
    }
    this.used[i] = 1;
    this.nonce[i] = key;
    this.tsval[i] = tsval;
    this.previousTsval[i] = -1;
    this.slot[i] = slot;
    this.family[i] = t.family;
    this.address[4 * i] = t.r0;
    this.address[4 * i + 1] = t.r1;
    this.address[4 * i + 2] = t.r2;
    this.address[4 * i + 3] = t.r3;
    this.port[i] = t.remotePort;
    this.byNonce.set(key, i);
  }

  private sameTuple(i: number, t: SegmentTuple): boolean {
    const a = 4 * i;
    return (
      this.family[i] === t.family &&
      this.port[i] === t.remotePort &&
      this.address[a] === (t.r0 | 0) &&
      this.address[a + 1] === (t.r1 | 0) &&
      this.address[a + 2] === (t.r2 | 0) &&
      this.address[a + 3] === (t.r3 | 0)
    );
  }
}
