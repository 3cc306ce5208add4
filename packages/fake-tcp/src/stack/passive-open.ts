/**
 * The listener's side of the handshake, as decisions the stack carries out: whether a SYN is
 * answered (with which SYN cookie) or refused, whether a segment proves a cookie, and whether
 * the connection it stands for is admitted, makes room by evicting another, or is refused.
 * It owns what those decisions read: the cookie secret, the per-source counts and the
 * eviction candidates. No state is kept per handshake in progress: a SYN flood costs nothing
 * but the SYN-ACKs.
 *
 * The client sends ISN 0 (phantun servers need it), so our SYN-ACK acks 1 and the ACK that
 * completes the handshake carries seq 1 and ack = our ISN (the cookie) + 1. Its first data
 * segment carries the same, so it completes a handshake whose ACK was lost: the server never
 * resends its SYN-ACK, having nothing to resend it from.
 */
import type { ConnectionTable } from "./conn-table.js";
import { Evictor } from "./eviction.js";
import type { SegmentTuple } from "./segment-writer.js";
import type { Socket } from "./socket.js";
import { SourceCounts } from "./source-counts.js";
import { COOKIE_SLOT_MS, CookieBits, SynCookies } from "./syn-cookies.js";

/** Decisions of `PassiveOpens.onSyn` and `PassiveOpens.admit`. */
export const Admission = {
  /** Go ahead (answer the SYN with a cookie / create the connection). */
  admit: 0,
  /** The table is full: first evict `PassiveOpens.victim()` (only from `admit`). */
  evict: 1,
  /** The table (nothing evictable) or the accept backlog is full: refuse with an RST. */
  refuseFull: 2,
  /** The source has its share of connections: refuse with an RST. */
  refusePerSource: 3,
} as const;

/** The limits these decisions apply (the stack's resolved options have these). */
export interface AdmissionLimits {
  maxConnections: number;
  maxConnectionsPerSource: number;
  acceptBacklog: number;
}

/** TCP flag bits this module reads. */
const ACK = 0x10;

export class PassiveOpens {
  private readonly sources = new SourceCounts();
  private readonly evictor: Evictor;

  constructor(
    private readonly table: ConnectionTable,
    private readonly limits: AdmissionLimits,
    private readonly cookies = new SynCookies(),
  ) {
    this.evictor = new Evictor(table);
  }

  /**
   * A SYN seq 0 from `t`'s remote end to a listening port. `replacing`: the tuple has an
   * established connection that the proof would replace (the table does not grow). Refuses
   * now what the proof would be refused for, so the client learns it at once.
   */
  onSyn(t: SegmentTuple, acceptQueued: number, replacing: boolean, now: number): number {
    if (!replacing && this.sourceFull(t)) return Admission.refusePerSource;
    if (acceptQueued >= this.limits.acceptBacklog) return Admission.refuseFull;
    if (!replacing && this.table.size >= this.limits.maxConnections && !this.evictor.hasVictim(now))
      return Admission.refuseFull;
    return Admission.admit;
  }

  /**
   * The ISN of our SYN-ACK to `t`: a cookie carrying whether the peer is `ours` and its
   * `generation` (0, or `restartGeneration` of the connection a proof would replace).
   */
  cookie(t: SegmentTuple, now: number, ours: boolean, generation: number): number {
    return this.cookies.make(t, now, generation | (ours ? CookieBits.ours : 0));
  }

  /**
   * The cookie bits (>= 0) when a segment from `t` with these fields completes a handshake
   * with one of our cookies, else -1: flags exactly ACK, seq = the client's ISN + 1 = 1 and
   * ack = cookie + 1 (`seq` and `ack` as on the wire, any sign).
   */
  proven(t: SegmentTuple, flags: number, seq: number, ack: number, now: number): number {
    if (flags !== ACK || (seq | 0) !== 1) return -1;
    return this.cookies.check(t, (ack - 1) | 0, now);
  }

  /** The generation bit of a cookie answering a SYN on `s`'s established tuple. */
  restartGeneration(s: Socket): number {
    return (s.iss & CookieBits.generation) ^ CookieBits.generation;
  }

  /**
   * The cookie bits (>= 0) when a segment on `s`'s established tuple proves the cookie we
   * answered a SYN on that tuple with (so the peer restarted and the connection is replaced),
   * else -1. Forgets the SYN once every such cookie has expired.
   */
  provesRestart(
    s: Socket,
    t: SegmentTuple,
    flags: number,
    seq: number,
    ack: number,
    now: number,
  ): number {
    if (now - s.restartSynAt > 2 * COOKIE_SLOT_MS) {
      s.restartSynAt = 0;
      return -1;
    }
    const bits = this.proven(t, flags, seq, ack, now);
    // The old connection's own segments carry its ISN + 1: another generation never matches.
    if (bits < 0 || (bits & CookieBits.generation) === (s.iss & CookieBits.generation)) return -1;
    return bits;
  }

  /** A proven handshake from `t`'s remote end: may its connection be created now? */
  admit(t: SegmentTuple, acceptQueued: number, now: number): number {
    if (this.sourceFull(t)) return Admission.refusePerSource;
    if (acceptQueued >= this.limits.acceptBacklog) return Admission.refuseFull;
    if (this.table.size < this.limits.maxConnections) return Admission.admit;
    return this.evictor.hasVictim(now) ? Admission.evict : Admission.refuseFull;
  }

  /** The connection to evict after `admit` said `evict` (null only if called otherwise). */
  victim(now: number): Socket | null {
    return this.evictor.victim(now);
  }

  /** The connection from a proven cookie with these `bits` exists now (`s` is passive). */
  opened(s: Socket, bits: number, now: number): void {
    s.iss = (s.sndNxt - 1) | 0;
    s.peerIsOurs = (bits & CookieBits.ours) !== 0;
    s.establishedAt = now;
    this.sources.add(s.family, s.r0, s.r1);
  }

  /** A passive connection closed. */
  closed(s: Socket): void {
    this.sources.remove(s.family, s.r0, s.r1);
  }

  private sourceFull(t: SegmentTuple): boolean {
    return this.sources.count(t.family, t.r0, t.r1) >= this.limits.maxConnectionsPerSource;
  }
}
