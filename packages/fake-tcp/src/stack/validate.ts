/**
 * Which received segments of an established connection are believed: pure functions over a
 * socket's sequence state that return a verdict; the stack carries it out. Nothing here
 * allocates (they run once per received packet).
 *
 * A segment is believed when its seq lies in a window around the highest sequence the peer
 * has sent (`rcvHigh`) AND its ack lies within what we sent in the last 1.5-2 s (RFC 5961
 * section 5 spirit). The two windows are sized together: their product is held at 2^44 of
 * the 2^64 (seq, ack) pairs, so a blind attacker's random segment is believed with
 * probability at most 2^-20 (20,000 of them: 0.02 expected). When we send little, the ack
 * window is small and the seq window large (256 MiB idle); when we send a lot, the seq window
 * shrinks (64 KiB at 1 Gbit/s, 16 KiB at the cap).
 *
 * A legitimate stream that jumped past the seq window (a long loss burst) is taken back by a
 * resync: `RESYNC_CHAIN` consecutive segments (each seq = the previous seq + its length),
 * each carrying a fresh ack (within what we sent in the last 1-1.5 s: exactly our next
 * sequence number when we send nothing), arriving no more than `CHAIN_GAP_MS` apart.
 *
 * An RST is believed only when its seq is exactly `rcvHigh`: both the closing RST of a
 * phantun peer or ours (seq = the sender's next sequence number) and the RST for an unknown
 * tuple (seq = the ack of the segment that provoked it, which we set to `rcvHigh`) carry
 * exactly that. An RST elsewhere in the seq window draws a challenge ACK instead.
 */
import { seqAdd, seqDiff, seqInWindow } from "./seq.js";

/** The sequence state validation reads and the resync chain it keeps (a Socket has these). */
export interface SeqState {
  /** Highest sequence number received, seq + length (int32). */
  rcvHigh: number;
  /** Our next sequence number (int32). */
  sndNxt: number;
  /** Lowest acceptable ack (int32): what we had sent 1.5-2 s ago, less `ACK_SLACK`. */
  ackFloor: number;
  /** Lowest fresh ack (int32): what we had sent 1-1.5 s ago. */
  freshFloor: number;
  /** Our next sequence number at the last two sweeps (int32), newest first. */
  sndMark0: number;
  sndMark1: number;
  /** Resync chain: the seq its next segment must carry, segments so far, clock of the last. */
  chainNext: number;
  chainCount: number;
  chainAt: number;
}

/** Verdicts of `judgeSegment`. */
export const Verdict = {
  /** Believe it: deliver, track. */
  accept: 0,
  /** Seq outside the window (and, for data, no fresh ack to start or extend a chain). */
  outOfWindow: 1,
  /** Seq in the window but the ack is outside what we sent recently (or no ACK flag). */
  badAck: 2,
  /** Outside the window with a fresh ack: one more link of a resync chain, not delivered. */
  chained: 3,
  /** Completes a resync chain: `rcvHigh` jumps to the chain's end; delivered. */
  resync: 4,
} as const;

/** Verdicts of `judgeRst`. */
export const RstVerdict = {
  /** Seq exactly `rcvHigh`: the connection closes. */
  close: 0,
  /** In the window but not exact: answer with a challenge ACK, do not close. */
  challenge: 1,
  /** Outside the window: count and ignore. */
  outOfWindow: 2,
} as const;

/**
 * Slack below the oldest ack we accept (bytes): a phantun peer's ack stays wherever our last
 * segment that reached it ended, so after a quiet spell it may trail our next sequence number
 * by the datagrams we sent last that it lost or got out of order; our probes' answers ack a
 * few bytes below it too. 2^16 - 1, so that the ack window of an idle connection has 2^16
 * values.
 */
export const ACK_SLACK = 0xffff;
/** Most acks the ack window holds (bytes of our sending it reaches back): 1 GiB. */
export const ACK_SPAN_MAX = 2 ** 30 - 1;
/** Largest seq window (bytes, behind + ahead): 1 GiB, a quarter of it behind `rcvHigh`. */
export const SEQ_WINDOW_MAX = 2 ** 30;
/**
 * log2 of the bound on (seq window size) x (ack window size): 2^44 of 2^64 pairs. (2^48 let a
 * 20,000-segment flood through about once in four runs; 2^44 leaves the seq window at 1 Gbit/s
 * of our sending 64 KiB, still far more than one path reorders.)
 */
export const WINDOW_AREA_BITS = 44;
/** Consecutive segments with fresh acks that resynchronise a stream that jumped. */
export const RESYNC_CHAIN = 3;
/** Longest gap between two segments of a resync chain (ms). */
export const CHAIN_GAP_MS = 1000;

/** How many acks back from `sndNxt` the ack window reaches (0 .. ACK_SPAN_MAX). */
export function ackSpan(st: SeqState): number {
  const d = seqDiff(st.sndNxt, st.ackFloor);
  return d < 0 || d > ACK_SPAN_MAX ? ACK_SPAN_MAX : d;
}

/** How many acks back from `sndNxt` count as fresh (0 .. ACK_SPAN_MAX). */
export function freshSpan(st: SeqState): number {
  const d = seqDiff(st.sndNxt, st.freshFloor);
  return d < 0 || d > ACK_SPAN_MAX ? ACK_SPAN_MAX : d;
}

/**
 * How far the seq window reaches behind `rcvHigh` for an ack window reaching `span` acks back
 * (span + 1 values): a quarter of the window, whose size is 2^(48 - b) where 2^b > span, so
 * that seq window x ack window <= 2^WINDOW_AREA_BITS; at most a quarter of SEQ_WINDOW_MAX. (The hot path
 * works with the quarter: 2^28 is a small integer to V8, the whole 2^30 would not be.)
 */
export function seqBehind(span: number): number {
  const bits = 32 - Math.clz32(span);
  return bits >= WINDOW_AREA_BITS - 30 ? 1 << (WINDOW_AREA_BITS - 2 - bits) : SEQ_WINDOW_MAX / 4;
}

/** Size of the seq window for an ack window reaching `span` acks back (see `seqBehind`). */
export function seqWindow(span: number): number {
  return 4 * seqBehind(span);
}

/** True when `seq` lies in the seq window reaching `behind` back: [rcvHigh - w/4, rcvHigh + 3w/4). */
export function seqInReceiveWindow(st: SeqState, seq: number, behind: number): boolean {
  return seqInWindow(seq, st.rcvHigh, behind, 3 * behind - 1);
}

/** True when `ack` is at most `sndNxt` and at most `span` below it. */
export function ackWithin(st: SeqState, ack: number, span: number): boolean {
  return seqInWindow(ack, st.sndNxt, span, 0);
}

/** True when a segment with this seq continues the resync chain in progress. */
export function continuesChain(st: SeqState, seq: number, now: number): boolean {
  return st.chainCount > 0 && seq === st.chainNext && now - st.chainAt <= CHAIN_GAP_MS;
}

/**
 * Judges a received segment (not RST, not SYN) of `len` payload bytes made of `segments`
 * segments (a coalesced packet is several consecutive ones with the same ack). `hasAck`: the
 * ACK flag is set (a segment without it carries no ack to check, so it is not believed).
 * Zero-length segments are never chained: only data resynchronises.
 */
export function judgeSegment(
  st: SeqState,
  seq: number,
  ack: number,
  len: number,
  segments: number,
  hasAck: boolean,
  now: number,
): number {
  const span = ackSpan(st);
  if (seqInReceiveWindow(st, seq, seqBehind(span)))
    return hasAck && ackWithin(st, ack, span) ? Verdict.accept : Verdict.badAck;
  return judgeOutside(st, seq, ack, len, segments, hasAck, now);
}

/** `judgeSegment` for a seq outside the window (kept apart: the per-packet path stays small). */
function judgeOutside(
  st: SeqState,
  seq: number,
  ack: number,
  len: number,
  segments: number,
  hasAck: boolean,
  now: number,
): number {
  if (len === 0 || !hasAck || !ackWithin(st, ack, freshSpan(st))) return Verdict.outOfWindow;
  const before = continuesChain(st, seq, now) ? st.chainCount : 0;
  return before + segments >= RESYNC_CHAIN ? Verdict.resync : Verdict.chained;
}

/**
 * Records a `chained` segment (or the one that completes a chain: call before applying a
 * `resync`). Returns how many of its `segments` completed the chain and may be delivered:
 * 0 for a `chained` verdict, at least 1 for `resync`.
 */
export function recordChain(
  st: SeqState,
  seq: number,
  len: number,
  segments: number,
  now: number,
): number {
  const before = continuesChain(st, seq, now) ? st.chainCount : 0;
  const after = before + segments;
  if (after >= RESYNC_CHAIN) {
    st.chainCount = 0;
    return after - RESYNC_CHAIN + 1;
  }
  st.chainCount = after;
  st.chainNext = seqAdd(seq, len);
  st.chainAt = now;
  return 0;
}

/** Judges a received RST by its seq. */
export function judgeRst(st: SeqState, seq: number): number {
  if ((seq | 0) === st.rcvHigh) return RstVerdict.close;
  return seqInReceiveWindow(st, seq, seqBehind(ackSpan(st)))
    ? RstVerdict.challenge
    : RstVerdict.outOfWindow;
}

/** Starts the windows when a connection becomes established: nothing sent before counts. */
export function startSeqState(st: SeqState): void {
  st.sndMark0 = st.sndMark1 = st.freshFloor = st.sndNxt;
  st.ackFloor = seqAdd(st.sndNxt, -ACK_SLACK);
  st.chainCount = 0;
}

/**
 * Moves the ack windows on; called every sweep (about every 500 ms). After the call the ack
 * window reaches back to our next sequence number three sweeps ago (so it covers the last
 * 1.5-2 s of sending until the next sweep) and the fresh window to two sweeps ago (1-1.5 s).
 */
export function markSent(st: SeqState): void {
  st.ackFloor = seqAdd(st.freshFloor, -ACK_SLACK);
  st.freshFloor = st.sndMark1;
  st.sndMark1 = st.sndMark0;
  st.sndMark0 = st.sndNxt;
}
