/**
 * Sequence validation as pure functions (validate.ts): the windows and their 2^44 area bound,
 * the resync rule, the RST rules, how the ack windows move with the sweeps; wrap-around at
 * 2^32 everywhere (states are drawn from the whole sequence space).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { seqAdd } from "../src/stack/seq.js";
import {
  ACK_SLACK,
  ACK_SPAN_MAX,
  ackSpan,
  CHAIN_GAP_MS,
  freshSpan,
  judgeRst,
  judgeSegment,
  markSent,
  RESYNC_CHAIN,
  RstVerdict,
  recordChain,
  SEQ_WINDOW_MAX,
  type SeqState,
  seqWindow,
  startSeqState,
  Verdict,
} from "../src/stack/validate.js";
import { xorshift32 } from "./helpers.js";

const u32 = fc.integer({ min: 0, max: 0xffffffff }).map((x) => x | 0);
const span = fc.integer({ min: 0, max: ACK_SPAN_MAX });

/** A connection whose ack window reaches `ackBack` and fresh window `freshBack` below sndNxt. */
function state(rcvHigh: number, sndNxt: number, ackBack = ACK_SLACK, freshBack = 0): SeqState {
  return {
    rcvHigh: rcvHigh | 0,
    sndNxt: sndNxt | 0,
    ackFloor: seqAdd(sndNxt, -ackBack),
    freshFloor: seqAdd(sndNxt, -freshBack),
    sndMark0: sndNxt | 0,
    sndMark1: sndNxt | 0,
    chainNext: 0,
    chainCount: 0,
    chainAt: 0,
  };
}

/** Carries out a verdict the way the stack does (chain bookkeeping and the resync jump). */
function apply(st: SeqState, seq: number, ack: number, len: number, now: number): number {
  const v = judgeSegment(st, seq, ack, len, 1, true, now);
  if (v === Verdict.chained) recordChain(st, seq, len, 1, now);
  if (v === Verdict.resync) {
    recordChain(st, seq, len, 1, now);
    st.rcvHigh = seqAdd(seq, len);
  }
  if (v === Verdict.accept && ((seqAdd(seq, len) - st.rcvHigh) | 0) > 0)
    st.rcvHigh = seqAdd(seq, len);
  return v;
}

describe("window sizes", () => {
  it("seq window x ack window <= 2^44 for every ack span; the seq window is a power of two", () => {
    fc.assert(
      fc.property(span, (sp) => {
        const w = seqWindow(sp);
        expect(w).toBeLessThanOrEqual(SEQ_WINDOW_MAX);
        expect(Number.isInteger(Math.log2(w))).toBe(true);
        expect(w * (sp + 1)).toBeLessThanOrEqual(2 ** 44);
      }),
    );
    expect(seqWindow(0)).toBe(SEQ_WINDOW_MAX);
    // Idle (the ack window is the slack alone, 2^16 values): 2^44 / 2^16.
    expect(seqWindow(ACK_SLACK)).toBe(2 ** 28);
    expect(seqWindow(2 ** 13 - 1)).toBe(2 ** 30);
    expect(seqWindow(2 ** 13)).toBe(2 ** 30);
    expect(seqWindow(2 ** 14)).toBe(2 ** 29);
    expect(seqWindow(2 ** 18 - 1)).toBe(2 ** 26);
    expect(seqWindow(2 ** 18)).toBe(2 ** 25);
    expect(seqWindow(2 ** 27)).toBe(2 ** 16); // ~1 Gbit/s for 1.5-2 s: 64 KiB
    expect(seqWindow(ACK_SPAN_MAX)).toBe(2 ** 14);
  });

  it("the ack span is capped and never negative, across the wrap", () => {
    fc.assert(
      fc.property(u32, u32, (sndNxt, floor) => {
        const st = state(0, sndNxt);
        st.ackFloor = floor;
        st.freshFloor = floor;
        const d = (sndNxt - floor) | 0;
        const expected = d < 0 || d > ACK_SPAN_MAX ? ACK_SPAN_MAX : d;
        expect(ackSpan(st)).toBe(expected);
        expect(freshSpan(st)).toBe(expected);
      }),
    );
  });

  it("accepts exactly seq in [rcvHigh - w/4, rcvHigh + 3w/4) with ack in [sndNxt - span, sndNxt]", () => {
    fc.assert(
      fc.property(u32, u32, span, (rcvHigh, sndNxt, back) => {
        const st = state(rcvHigh, sndNxt, back);
        const w = seqWindow(ackSpan(st));
        const behind = w / 4;
        const ahead = w - behind - 1;
        const ok = (seq: number, ack: number) =>
          judgeSegment(st, seq, ack, 100, 1, true, 0) === Verdict.accept;
        const lo = seqAdd(rcvHigh, -behind);
        const hi = seqAdd(rcvHigh, ahead);
        const ackLo = seqAdd(sndNxt, -back);
        for (const ack of [sndNxt, ackLo]) {
          expect(ok(rcvHigh, ack)).toBe(true);
          expect(ok(lo, ack)).toBe(true);
          expect(ok(hi, ack)).toBe(true);
          expect(ok(seqAdd(lo, -1), ack)).toBe(false);
          expect(ok(seqAdd(hi, 1), ack)).toBe(false);
        }
        // An ack past what we sent, or older than the window: seq in the window, ack bad.
        expect(judgeSegment(st, rcvHigh, seqAdd(sndNxt, 1), 100, 1, true, 0)).toBe(Verdict.badAck);
        expect(judgeSegment(st, rcvHigh, seqAdd(ackLo, -1), 100, 1, true, 0)).toBe(Verdict.badAck);
        // No ACK flag: nothing to check the ack against, not believed.
        expect(judgeSegment(st, rcvHigh, sndNxt, 100, 1, false, 0)).toBe(Verdict.badAck);
        // Pure ACKs pass the same windows.
        expect(judgeSegment(st, rcvHigh, sndNxt, 0, 1, true, 0)).toBe(Verdict.accept);
        expect(judgeSegment(st, seqAdd(hi, 1), sndNxt, 0, 1, true, 0)).toBe(Verdict.outOfWindow);
        expect(judgeSegment(st, rcvHigh, seqAdd(sndNxt, 1), 0, 1, true, 0)).toBe(Verdict.badAck);
      }),
    );
  });

  it("a blind attacker's random segment is believed with probability <= 2^-20 (sampled)", () => {
    // The worst case of each ack-window size: span one below a power of two. 2^19 random
    // (seq, ack) pairs per state, so the bound allows about 0.5 acceptances; we allow 6.
    const next = xorshift32(0x5eed, true);
    for (const back of [ACK_SLACK, 2 ** 18 - 1, 2 ** 22 - 1, 2 ** 27 - 1, ACK_SPAN_MAX]) {
      const st = state(next(), next(), back, back);
      let accepted = 0;
      let resynced = 0;
      for (let i = 0; i < 2 ** 19; i++) {
        const v = judgeSegment(st, next(), next(), 1400, 1, true, 0);
        if (v === Verdict.accept) accepted++;
        if (v === Verdict.resync) resynced++;
      }
      expect(resynced).toBe(0); // a single segment never resyncs
      expect(accepted).toBeLessThanOrEqual(6);
    }
    // And the exact figure behind the sampling: accepted pairs / all pairs.
    for (const back of [0, ACK_SLACK, 2 ** 20 - 1, ACK_SPAN_MAX])
      expect((seqWindow(back) * (back + 1)) / 2 ** 64).toBeLessThanOrEqual(2 ** -20);
  });
});

describe("resync after a jump", () => {
  it("three consecutive segments with fresh acks take the stream back; the first two are held", () => {
    fc.assert(
      fc.property(
        u32,
        u32,
        fc.integer({ min: 2 ** 30, max: 2 ** 32 - 2 ** 30 }),
        (rcv, snd, jump) => {
          const st = state(rcv, snd, ACK_SPAN_MAX, 0); // idle: the fresh window is sndNxt alone
          const at = seqAdd(rcv, jump); // far outside the window either way
          expect(apply(st, at, snd, 1000, 0)).toBe(Verdict.chained);
          expect(apply(st, seqAdd(at, 1000), snd, 500, 10)).toBe(Verdict.chained);
          expect(apply(st, seqAdd(at, 1500), snd, 1000, 20)).toBe(Verdict.resync);
          expect(st.rcvHigh).toBe(seqAdd(at, 2500));
          expect(apply(st, seqAdd(at, 2500), snd, 1000, 30)).toBe(Verdict.accept);
        },
      ),
    );
  });

  it("a chain needs fresh acks: exactly sndNxt when we sent nothing for a while", () => {
    const st = state(1, 1000, ACK_SPAN_MAX, 0);
    for (let i = 0; i < 10; i++)
      expect(apply(st, seqAdd(2 ** 31, i * 100), 999, 100, i)).toBe(Verdict.outOfWindow);
    expect(st.chainCount).toBe(0);
    expect(st.rcvHigh).toBe(1);
  });

  it("fresh = what we sent in the last sweeps: within it chains, beyond it not", () => {
    const st = state(1, 100_000, ACK_SPAN_MAX, 50_000);
    expect(judgeSegment(st, 2 ** 31, 50_000, 100, 1, true, 0)).toBe(Verdict.chained);
    expect(judgeSegment(st, 2 ** 31, 49_999, 100, 1, true, 0)).toBe(Verdict.outOfWindow);
    expect(judgeSegment(st, 2 ** 31, 100_001, 100, 1, true, 0)).toBe(Verdict.outOfWindow);
  });

  it("a gap in seq, a pause longer than CHAIN_GAP_MS or a pure ACK restarts or stops the chain", () => {
    const st = state(1, 5, ACK_SPAN_MAX, 0);
    const far = (2 ** 31) | 0;
    expect(apply(st, far, 5, 100, 0)).toBe(Verdict.chained);
    expect(apply(st, seqAdd(far, 101), 5, 100, 1)).toBe(Verdict.chained); // gap: a new chain of 1
    expect(st.chainCount).toBe(1);
    expect(apply(st, seqAdd(far, 201), 5, 100, 2 + CHAIN_GAP_MS)).toBe(Verdict.chained); // too late
    expect(st.chainCount).toBe(1);
    expect(judgeSegment(st, seqAdd(far, 301), 5, 0, 1, true, 3 + CHAIN_GAP_MS)).toBe(
      Verdict.outOfWindow,
    );
    expect(apply(st, seqAdd(far, 301), 5, 100, 3 + CHAIN_GAP_MS)).toBe(Verdict.chained);
    expect(apply(st, seqAdd(far, 401), 5, 100, 4 + CHAIN_GAP_MS)).toBe(Verdict.resync);
  });

  it("a coalesced packet counts each of its segments; only those completing the chain are delivered", () => {
    const st = state(1, 5, ACK_SPAN_MAX, 0);
    const far = (2 ** 31) | 0;
    expect(judgeSegment(st, far, 5, 2 * 1000, 2, true, 0)).toBe(Verdict.chained);
    expect(recordChain(st, far, 2000, 2, 0)).toBe(0);
    expect(judgeSegment(st, seqAdd(far, 2000), 5, 4000, 4, true, 1)).toBe(Verdict.resync);
    expect(recordChain(st, seqAdd(far, 2000), 4000, 4, 1)).toBe(4); // the chain was complete with the first
    const fresh = state(1, 5, ACK_SPAN_MAX, 0);
    expect(judgeSegment(fresh, far, 5, 5000, 5, true, 0)).toBe(Verdict.resync);
    expect(recordChain(fresh, far, 5000, 5, 0)).toBe(5 - RESYNC_CHAIN + 1);
  });

  it("a blind chain resyncs only with a fresh ack: never in 2^16 random chains against an idle sender", () => {
    const next = xorshift32(42, true);
    const st = state(next(), next(), ACK_SPAN_MAX, 0);
    let resyncs = 0;
    for (let i = 0; i < 2 ** 16; i++) {
      const seq = next();
      const ack = next();
      for (let k = 0; k < RESYNC_CHAIN; k++)
        if (apply(st, seqAdd(seq, k * 100), ack, 100, i) === Verdict.resync) resyncs++;
    }
    expect(resyncs).toBe(0);
    // The same chain with the one fresh ack (sndNxt) does resync: the test can fail.
    for (let k = 0; k < RESYNC_CHAIN; k++) apply(st, seqAdd(2 ** 31, k * 100), st.sndNxt, 100, 0);
    expect(st.rcvHigh).toBe(seqAdd(2 ** 31, RESYNC_CHAIN * 100));
  });
});

describe("RST rules", () => {
  it("closes only on seq exactly rcvHigh; in the window: challenge; elsewhere: ignored", () => {
    fc.assert(
      fc.property(u32, u32, span, u32, (rcvHigh, sndNxt, back, seq) => {
        const st = state(rcvHigh, sndNxt, back);
        const w = seqWindow(ackSpan(st));
        expect(judgeRst(st, rcvHigh)).toBe(RstVerdict.close);
        expect(judgeRst(st, seqAdd(rcvHigh, 1))).toBe(RstVerdict.challenge);
        expect(judgeRst(st, seqAdd(rcvHigh, -1))).toBe(RstVerdict.challenge);
        expect(judgeRst(st, seqAdd(rcvHigh, w - w / 4))).toBe(RstVerdict.outOfWindow);
        expect(judgeRst(st, seqAdd(rcvHigh, -w / 4 - 1))).toBe(RstVerdict.outOfWindow);
        const d = (seq - rcvHigh) | 0;
        const expected =
          d === 0
            ? RstVerdict.close
            : d >= -w / 4 && d < w - w / 4
              ? RstVerdict.challenge
              : RstVerdict.outOfWindow;
        expect(judgeRst(st, seq)).toBe(expected);
      }),
    );
  });
});

describe("the ack windows follow what we send, sweep by sweep", () => {
  it("ack window: the last 1.5-2 s (3 sweeps back) plus slack; fresh: 1-1.5 s (2 sweeps back)", () => {
    fc.assert(
      fc.property(u32, (start) => {
        const st = state(0, start);
        startSeqState(st);
        expect(ackSpan(st)).toBe(ACK_SLACK);
        expect(freshSpan(st)).toBe(0);
        // 1000 bytes sent between sweeps: sndNxt at the sweeps is start + 1000 k.
        const at = (k: number) => seqAdd(start, 1000 * k);
        for (let k = 1; k <= 6; k++) {
          st.sndNxt = at(k);
          markSent(st);
          expect(st.freshFloor).toBe(at(Math.max(0, k - 2)));
          expect(st.ackFloor).toBe(seqAdd(at(Math.max(0, k - 3)), -ACK_SLACK));
        }
        // Then we stop sending: after three sweeps the fresh window is sndNxt alone.
        for (let k = 0; k < 3; k++) markSent(st);
        expect(freshSpan(st)).toBe(0);
        expect(ackSpan(st)).toBe(ACK_SLACK);
      }),
    );
  });
});
