/**
 * Per-connection liveness decisions: delayed ACKs, keepalives, dead-peer detection, the fast
 * check after a doubtful RST, and answers to the peer's probes. Pure functions over a socket's
 * state that say what to do; the stack does it. Nothing here allocates.
 *
 * Dead-peer detection acts only on a peer known to be one of our programs (`peerIsOurs`, set
 * by the handshake negotiation): only such a peer answers probes. A phantun peer has no probe
 * answer (its ACK rule even answers some old-seq segments once, which proves nothing), so it
 * gets plain keepalives, which keep NAT mappings and conntrack entries on the path alive, and
 * is closed only by a believed RST or the idle timeout.
 *
 * A probe is a pure ACK whose seq lies just below our next sequence number: our peer sees an
 * old sequence number and answers with a pure ACK whose ack echoes it. Each probe of a quiet
 * spell steps one further back, so that a peer that missed our last datagram (and so saw the
 * first probe as new) finds the next one old.
 */
import { seqAdd, seqLt } from "./seq.js";

/** The socket state these decisions read (a Socket has these). */
export interface LiveState {
  peerIsOurs: boolean;
  sndNxt: number;
  rcvHigh: number;
  lastReceived: number;
  lastSent: number;
  unackedBytes: number;
  unackedSince: number;
  lastProbeAt: number;
  /** Our latest probes' seqs, newest first, and how many of them await an answer (0-3). */
  probeSeq: number;
  probeSeq1: number;
  probeSeq2: number;
  probesOutstanding: number;
  probesUnanswered: number;
  probeStep: number;
  lastAnswerAt: number;
  verifyProbes: number;
}

/** The options these decisions read (the stack's resolved options have these). */
export interface LiveOptions {
  idleTimeoutMs: number;
  ackDelayMs: number;
  keepaliveIntervalMs: number;
  deadPeerProbes: number;
  probeAnswerIntervalMs: number;
  verifyIntervalMs: number;
}

/** What a sweep asks for (bits; the close bits exclude every other). */
export const SweepAction = {
  none: 0,
  /** No traffic either way for `idleTimeoutMs`: close. */
  closeIdle: 1,
  /** A peer of ours left `deadPeerProbes` probes in a row unanswered: close. */
  closeDead: 2,
  /** Received data waited `ackDelayMs` for an ACK: send a pure ACK. */
  ack: 4,
  /** Quiet for the keepalive interval, peer not ours: send a keepalive (a plain pure ACK). */
  keepalive: 8,
  /** Quiet for the keepalive interval, peer ours: send a probe. */
  probe: 16,
} as const;

/** What the fast check after a doubtful RST asks for. */
export const VerifyAction = {
  /** Not yet time for the next probe. */
  wait: 0,
  /** Send the next probe. */
  probe: 1,
  /** Every probe went unanswered: the RST was real. */
  close: 2,
} as const;

/** How far back (in probes) a probe's sequence number may step. */
export const MAX_PROBE_STEP = 8;
/**
 * How many of our latest probes an answer may echo: a probe repeated before the answer to the
 * previous one arrived (a path slower than the repeat interval, a peer stalled for a moment)
 * must not make that answer count for nothing.
 */
export const PROBE_HISTORY = 3;
/** How long a probe stays answerable while data arrives (ms): its answer may trail data. */
export const PROBE_ANSWER_WINDOW_MS = 3_000;

/** How often the stack sweeps its established connections (ms). */
export const SWEEP_INTERVAL_MS = 500;
/**
 * Keepalive and probe times fall on sweeps, whose timers fire a few ms early or late: a probe
 * due in 1 ms would wait a whole sweep, and each repeat of it another (a dead peer noticed up to
 * 2 s late at a 1 s keepalive). What falls due within half a sweep is done at this one.
 */
const SWEEP_SLACK_MS = SWEEP_INTERVAL_MS / 2;

/** The periodic sweep's decision for one established connection at `now`. */
export function sweepDecision(s: LiveState, now: number, o: LiveOptions): number {
  if (now - Math.max(s.lastReceived, s.lastSent) >= o.idleTimeoutMs) return SweepAction.closeIdle;
  let action: number = SweepAction.none;
  if (s.unackedBytes > 0 && now - s.unackedSince >= o.ackDelayMs) action |= SweepAction.ack;
  const keepalive = o.keepaliveIntervalMs;
  if (keepalive <= 0 || now - s.lastReceived < keepalive - SWEEP_SLACK_MS) return action;
  if (!s.peerIsOurs)
    return now - s.lastProbeAt >= keepalive - SWEEP_SLACK_MS
      ? action | SweepAction.keepalive
      : action;
  // An unanswered probe is repeated at half the interval, so a dead peer is noticed within
  // about keepalive * (1 + deadPeerProbes / 2).
  const outstanding = s.probesOutstanding > 0;
  const every = outstanding ? keepalive / 2 : keepalive;
  if (now - s.lastProbeAt < every - SWEEP_SLACK_MS) return action;
  if (outstanding && s.probesUnanswered + 1 >= o.deadPeerProbes) return SweepAction.closeDead;
  return action | SweepAction.probe;
}

/**
 * The seq of the keepalive sent when a connection becomes established: our next sequence
 * number, except from our client to a server not known to be ours (a phantun server), where
 * it lies one below. phantun's ACK rule answers a segment behind what it last acknowledged
 * once, by wrap-around, and that answer is the first segment a phantun server sends after its
 * SYN-ACK: from it, conntrack on the path learns the server's scaled window (until then it
 * finds our data more than about 64 KiB past the server's ack invalid, and a one-way flow to
 * the server stalls). Nothing is concluded from the answer.
 */
export function firstKeepaliveSeq(s: {
  passive: boolean;
  peerIsOurs: boolean;
  sndNxt: number;
}): number {
  return !s.passive && !s.peerIsOurs ? seqAdd(s.sndNxt, -1) : s.sndNxt;
}

/** The sequence number of the next probe (see the module comment). */
export function nextProbeSeq(s: LiveState): number {
  return seqAdd(s.sndNxt, -1 - Math.min(s.probeStep, MAX_PROBE_STEP));
}

/** Records that a probe went out at `now` with sequence number `seq`. */
export function probeSent(
  s: LiveState & { counters: { probesSent: number } },
  seq: number,
  now: number,
): void {
  if (s.probesOutstanding > 0) s.probesUnanswered++;
  s.probeSeq2 = s.probeSeq1;
  s.probeSeq1 = s.probeSeq;
  s.probeSeq = seq;
  if (s.probesOutstanding < PROBE_HISTORY) s.probesOutstanding++;
  s.probeStep++;
  s.lastProbeAt = now;
  s.counters.probesSent++;
}

/** True when a believed zero-length segment with this ack answers one of our latest probes. */
export function isProbeAnswer(s: LiveState, ack: number): boolean {
  const n = s.probesOutstanding;
  return (
    (n > 0 && ack === s.probeSeq) ||
    (n > 1 && ack === s.probeSeq1) ||
    (n > 2 && ack === s.probeSeq2)
  );
}

/** Records an answer to our probes: the peer is alive, the fast check (if any) is over. */
export function probeAnswered(s: LiveState & { counters: { probesAnswered: number } }): void {
  s.probesOutstanding = 0;
  s.probesUnanswered = 0;
  s.verifyProbes = 0;
  s.counters.probesAnswered++;
}

/**
 * Believed data arrived: the peer is alive; the next quiet spell starts a new probe sequence.
 * Data that `advanced` the highest sequence received (or resynced it) was sent after anything
 * the peer sent before, so it also ends a fast check: a peer that really reset sends nothing
 * new (data it sent before its RST and that arrives after it lies behind that RST's seq).
 */
export function dataArrived(s: LiveState, now: number, advanced: boolean): void {
  s.probesUnanswered = 0;
  if (now - s.lastProbeAt >= PROBE_ANSWER_WINDOW_MS) s.probesOutstanding = 0;
  s.probeStep = 0;
  if (advanced) s.verifyProbes = 0;
}

/**
 * True when a believed zero-length segment with this seq is a probe from our peer that we
 * answer now: the peer is ours (a phantun peer sends no probes), the seq is below what it has
 * sent, and we have not answered within `probeAnswerIntervalMs`.
 */
export function answersProbe(s: LiveState, seq: number, now: number, o: LiveOptions): boolean {
  return s.peerIsOurs && seqLt(seq, s.rcvHigh) && now - s.lastAnswerAt >= o.probeAnswerIntervalMs;
}

/**
 * The fast liveness check a peer of ours gets after an RST that was in the window but not
 * exact: probes `verifyIntervalMs` apart; the first answer ends the check, `deadPeerProbes`
 * unanswered ones close the connection.
 */
export function verifyDecision(s: LiveState, now: number, o: LiveOptions): number {
  if (now - s.lastProbeAt < o.verifyIntervalMs) return VerifyAction.wait;
  return s.verifyProbes >= o.deadPeerProbes ? VerifyAction.close : VerifyAction.probe;
}
