/**
 * Keyed mode's handshake decisions, both sides, as values the stack acts on:
 *
 * - client: a connection's random ISN (the nonce), its SYN tokens, and whether a SYN-ACK is a
 *   key holder's answer;
 * - server: whether a SYN carries a valid token that is no replay (then the ISN to answer
 *   with), and whether a segment completes a keyed handshake.
 *
 * The server keeps no state for a SYN it does not answer, and for one it answers only its
 * replay-cache entry: the SYN-ACK's ISN is a MAC it can recompute when the ACK arrives.
 */
import { randomFillSync } from "node:crypto";
import type { SegmentTuple } from "../stack/segment-writer.js";
import type { Socket } from "../stack/socket.js";
import { read32 } from "../wire/bytes.js";
import type { TcpRepr } from "../wire/tcp.js";
import { timestampOptionOffset } from "./keyed-syn.js";
import { ReplayCache, SynReplay } from "./replay-cache.js";
import { TunnelKey, tokenSlotOf } from "./tunnel-key.js";

/** Negative results of `KeyedHandshakes.answerSyn` (a result >= 0 is the ISN to answer with). */
export const SynRefusal = {
  /** No timestamp option, or its token is not one of our key's for an accepted slot. */
  unauthenticated: -1,
  /** A valid token first seen from another tuple: a replay. */
  replay: -2,
} as const;

export class KeyedHandshakes {
  readonly key: TunnelKey;
  private readonly replays: ReplayCache;
  private readonly random = new Uint32Array(3);

  constructor(secret: Uint8Array, replayCacheSize: number) {
    this.key = new TunnelKey(secret);
    this.replays = new ReplayCache(replayCacheSize);
  }

  /** Replay-cache entries overwritten while still needed (see `ReplayCache.liveOverwrites`). */
  get replayCacheOverwrites(): number {
    return this.replays.liveOverwrites;
  }

  // ---- client ---------------------------------------------------------------------------

  /** Starts an active open on `s`: a random ISN (the nonce), IPv6 flow label and IPv4 ID. */
  begin(s: Socket): void {
    randomFillSync(this.random);
    s.iss = this.random[0] | 0;
    s.sndNxt = (s.iss + 1) | 0; // the SYN consumes one sequence number
    s.flowLabel = this.random[1] & 0xfffff || 1;
    s.synIpId = this.random[2] & 0xffff;
    s.keyTsval = 0;
    s.keyPreviousTsval = -1;
  }

  /**
   * The token (TSval) of the SYN `s` sends now. A retransmission in a later slot carries a new
   * token; the one before stays acceptable in `answersSyn`.
   */
  synToken(s: Socket, now: number): number {
    const tsval = this.key.synToken(s.remotePort, tokenSlotOf(now), s.iss);
    if (s.attempts > 1 && tsval !== s.keyTsval) s.keyPreviousTsval = s.keyTsval;
    s.keyTsval = tsval;
    return tsval;
  }

  /** Whether `seq`, a SYN-ACK's sequence number, is the ISN a key holder answers `s`'s SYN with. */
  answersSyn(s: Socket, seq: number): boolean {
    const isn = seq >>> 0;
    const nonce = s.iss >>> 0;
    if (this.key.synAckIsn(s.remotePort, nonce, s.keyTsval) === isn) return true;
    const previous = s.keyPreviousTsval;
    return previous >= 0 && this.key.synAckIsn(s.remotePort, nonce, previous) === isn;
  }

  // ---- server ---------------------------------------------------------------------------

  /**
   * The SYN just parsed (`tcp`, in `buf`) from `t`'s remote end to `t.localPort`: the ISN of
   * our SYN-ACK (>= 0) when it carries a valid token that is no replay, else a `SynRefusal`.
   */
  answerSyn(t: SegmentTuple, buf: Uint8Array, tcp: TcpRepr, now: number): number {
    const at = timestampOptionOffset(buf, tcp.optionsOffset, tcp.optionsLength);
    if (at < 0) return SynRefusal.unauthenticated;
    const nonce = tcp.seq >>> 0;
    const tsval = read32(buf, at);
    const slot = this.key.tokenSlot(t.localPort, nonce, tsval, now);
    if (slot < 0) return SynRefusal.unauthenticated;
    if (this.replays.admitSyn(t, nonce, tsval, slot, now) === SynReplay.replay)
      return SynRefusal.replay;
    return this.key.synAckIsn(t.localPort, nonce, tsval);
  }

  /**
   * Whether a segment from `t`'s remote end with these `flags`, `seq` and `ack` completes a
   * keyed handshake: flags exactly ACK, seq = the nonce of a SYN we answered from that tuple
   * + 1, ack = our ISN + 1. The client's ACK does, and so does its first data segment or
   * keepalive (which therefore repairs a lost ACK).
   */
  provesAck(t: SegmentTuple, flags: number, seq: number, ack: number, now: number): boolean {
    if (flags !== 0x10) return false;
    return this.replays.provesAck(t, (seq - 1) >>> 0, ack, this.key, t.localPort, now);
  }

  /** The IPv6 flow label of our connection with `t`'s remote end (see `TunnelKey.flowLabel`). */
  flowLabel(t: SegmentTuple, nonce: number, isn: number): number {
    return this.key.flowLabel(t.localPort, nonce >>> 0, isn >>> 0);
  }
}
