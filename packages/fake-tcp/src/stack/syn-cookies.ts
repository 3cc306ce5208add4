/**
 * SYN cookies: the server's initial sequence number is a keyed hash of the connection's tuple
 * and a coarse time slot, so a listener answers a SYN without keeping any state and creates
 * the connection only when the client's ACK (or first data segment) echoes the cookie + 1.
 *
 * Layout of a cookie (32 bits, the server ISN):
 *
 * | bits  | meaning                                                                   |
 * |-------|---------------------------------------------------------------------------|
 * | 0     | `ours`: the SYN carried our negotiation option                            |
 * | 1     | parity of the time slot the cookie was made in                            |
 * | 2     | generation: differs from the ISN of the connection a restart would replace |
 * | 3..31 | 29-bit MAC: HalfSipHash-2-4 of (tuple, slot, bits 0..2) under the secret  |
 *
 * A cookie made in slot S is valid in S and S + 1 (the parity says which of the two recent
 * slots to check), so it lives between one and two slots. The bits are inside the MAC, so
 * they cannot be changed without guessing it again.
 *
 * Strength. The secret is 64 random bits per stack (process start), never sent. Without it,
 * forging a cookie for a tuple means guessing 29 bits: one chance in 2^29 (5.4e8) per forged
 * ACK; at a million forged packets per second, one success takes about nine minutes on
 * average, and buys one connection for a spoofed tuple, which the table limits and eviction
 * bound. Recovering the key needs about 2^63 HalfSipHash evaluations against observed
 * cookies, far beyond an attacker of a tunnel endpoint; HalfSipHash is a keyed PRF designed for
 * exactly such short, attacker-chosen inputs. Someone who sees our SYN-ACKs (on the path) can
 * complete handshakes anyway, cookies or not: that is outside what a handshake can prevent.
 */
import { randomBytes } from "node:crypto";
import { halfSipHash } from "./keyed-hash.js";
import type { SegmentTuple } from "./segment-writer.js";

/** Length of a cookie time slot (ms). A cookie stays valid for one to two slots. */
export const COOKIE_SLOT_MS = 64_000;

/** The flag bits of a cookie. */
export const CookieBits = {
  /** The peer sent our negotiation option (it is one of ours). */
  ours: 1,
  /** Slot parity (set by `make`, never by the caller). */
  parity: 2,
  /** Generation, see the layout above. */
  generation: 4,
} as const;

const FLAG_MASK = 7;
const MAC_SHIFT = 3;

export class SynCookies {
  private readonly k0: number;
  private readonly k1: number;
  /** What is hashed, refilled for every cookie. */
  private readonly words = new Int32Array(11);

  /** `key`: 8 bytes; by default fresh random ones (tests pass their own). */
  constructor(key: Uint8Array = randomBytes(8)) {
    if (key.length !== 8) throw new RangeError(`SYN cookie key must be 8 bytes, got ${key.length}`);
    this.k0 = key[0] | (key[1] << 8) | (key[2] << 16) | (key[3] << 24) | 0;
    this.k1 = key[4] | (key[5] << 8) | (key[6] << 16) | (key[7] << 24) | 0;
  }

  /**
   * The cookie (int32) for tuple `t` at clock `now` (ms), carrying `flags` (`CookieBits.ours`
   * and/or `CookieBits.generation`).
   */
  make(t: SegmentTuple, now: number, flags: number): number {
    const slot = slotOf(now);
    const bits = (flags & ~CookieBits.parity & FLAG_MASK) | ((slot & 1) << 1);
    return (this.mac(t, slot, bits) & ~FLAG_MASK) | bits | 0;
  }

  /**
   * Checks `cookie` (what the peer's ack - 1 says our ISN was) for tuple `t` at clock `now`.
   * Returns its flag bits (`CookieBits`, >= 0) when it was made for this tuple in the current
   * or the previous slot, else -1.
   */
  check(t: SegmentTuple, cookie: number, now: number): number {
    const current = slotOf(now);
    const bits = cookie & FLAG_MASK;
    const slot = ((current ^ (bits >>> 1)) & 1) === 0 ? current : current - 1;
    if (slot < 0) return -1;
    return ((this.mac(t, slot, bits) ^ cookie) & ~FLAG_MASK) === 0 ? bits : -1;
  }

  private mac(t: SegmentTuple, slot: number, bits: number): number {
    const w = this.words;
    w[0] = t.r0;
    w[1] = t.r1;
    w[2] = t.r2;
    w[3] = t.r3;
    w[4] = t.l0;
    w[5] = t.l1;
    w[6] = t.l2;
    w[7] = t.l3;
    w[8] = (t.remotePort << 16) | t.localPort;
    w[9] = slot;
    w[10] = (t.family << 8) | bits;
    return halfSipHash(this.k0, this.k1, w, 11) << MAC_SHIFT;
  }
}

function slotOf(now: number): number {
  return Math.floor(now / COOKIE_SLOT_MS) | 0;
}
