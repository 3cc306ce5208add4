/** Liveness decisions as pure functions (liveness.ts): who is probed, when, and when closed. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  answersProbe,
  dataArrived,
  firstKeepaliveSeq,
  isProbeAnswer,
  type LiveOptions,
  type LiveState,
  MAX_PROBE_STEP,
  nextProbeSeq,
  probeAnswered,
  probeSent,
  SweepAction,
  sweepDecision,
  VerifyAction,
  verifyDecision,
} from "../src/stack/liveness.js";

const o: LiveOptions = {
  idleTimeoutMs: 180_000,
  ackDelayMs: 1000,
  keepaliveIntervalMs: 2000,
  deadPeerProbes: 3,
  probeAnswerIntervalMs: 200,
  verifyIntervalMs: 300,
};

function live(peerIsOurs: boolean): LiveState & {
  counters: { probesSent: number; probesAnswered: number };
} {
  return {
    peerIsOurs,
    sndNxt: 1000,
    rcvHigh: 500,
    lastReceived: 0,
    lastSent: 0,
    unackedBytes: 0,
    unackedSince: 0,
    lastProbeAt: 0,
    probeSeq: 0,
    probeSeq1: 0,
    probeSeq2: 0,
    probesOutstanding: 0,
    probesUnanswered: 0,
    probeStep: 0,
    lastAnswerAt: Number.NEGATIVE_INFINITY,
    verifyProbes: 0,
    counters: { probesSent: 0, probesAnswered: 0 },
  };
}

/** Runs sweeps every 500 ms from 0 to `until`, carrying out probes; returns the close time. */
function run(s: ReturnType<typeof live>, until: number, sending: boolean): number | null {
  for (let now = 500; now <= until; now += 500) {
    if (sending) s.lastSent = now;
    const a = sweepDecision(s, now, o);
    if (a === SweepAction.closeDead || a === SweepAction.closeIdle) return now;
    if (a & SweepAction.probe) probeSent(s, nextProbeSeq(s), now);
    if (a & SweepAction.keepalive) s.lastProbeAt = now;
  }
  return null;
}

describe("sweep decisions", () => {
  it("a peer not known to be ours is never probed or declared dead, whatever its state", () => {
    const state = fc.record({
      lastReceived: fc.integer({ min: 0, max: 10_000_000 }),
      lastSent: fc.integer({ min: 0, max: 10_000_000 }),
      lastProbeAt: fc.integer({ min: 0, max: 10_000_000 }),
      probesOutstanding: fc.nat(3),
      probesUnanswered: fc.nat(100),
      unackedBytes: fc.nat(10_000),
    });
    fc.assert(
      fc.property(state, fc.integer({ min: 0, max: 20_000_000 }), (st, now) => {
        const s = { ...live(false), ...st };
        const a = sweepDecision(s, now, o);
        expect(a & (SweepAction.probe | SweepAction.closeDead)).toBe(0);
      }),
    );
  });

  it("a silent peer not ours: a keepalive every interval, closed only by the idle timeout", () => {
    const s = live(false);
    expect(run(s, 179_500, true)).toBeNull(); // we keep sending: never idle
    const quiet = live(false);
    expect(run(quiet, 200_000, false)).toBe(180_000);
  });

  it("a silent peer of ours: probes after the interval, repeated at half of it, dead after deadPeerProbes", () => {
    const s = live(true);
    const closedAt = run(s, 60_000, true);
    // Probes at 2 s, 3 s, 4 s: the third repeat would be the fourth probe; dead at 5 s.
    expect(s.counters.probesSent).toBe(o.deadPeerProbes);
    expect(closedAt).toBe(o.keepaliveIntervalMs * (1 + o.deadPeerProbes / 2));
  });

  it("sweeps a few ms early or late do not push a probe, or its repeats, a whole sweep later", () => {
    // Sweep timers on a busy host: alternately 3 ms early and 3 ms late.
    const at = (i: number) => i * 500 + (i % 2 === 0 ? -3 : 3);
    for (const peerIsOurs of [true, false]) {
      const s = live(peerIsOurs);
      const sent: number[] = [];
      let closedAt: number | null = null;
      for (let i = 1; i <= 40 && closedAt === null; i++) {
        const now = at(i);
        const a = sweepDecision(s, now, o);
        if (a === SweepAction.closeDead) closedAt = now;
        if (a & SweepAction.probe) probeSent(s, nextProbeSeq(s), now);
        if (a & SweepAction.keepalive) s.lastProbeAt = now;
        if (a & (SweepAction.probe | SweepAction.keepalive)) sent.push(now);
      }
      if (peerIsOurs) {
        // Probes at about 2, 3 and 4 s, dead at about 5 s, as with punctual sweeps.
        expect(sent).toEqual([at(4), at(6), at(8)]);
        expect(closedAt).toBe(at(10));
      } else {
        // A keepalive at about every 2 s.
        expect(sent.slice(0, 4)).toEqual([at(4), at(8), at(12), at(16)]);
      }
    }
  });

  it("an answered peer of ours is never declared dead", () => {
    const s = live(true);
    for (let now = 500; now <= 60_000; now += 500) {
      const a = sweepDecision(s, now, o);
      expect(a & SweepAction.closeDead).toBe(0);
      if (a & SweepAction.probe) {
        probeSent(s, nextProbeSeq(s), now);
        // The answer comes back at once.
        expect(isProbeAnswer(s, s.probeSeq)).toBe(true);
        probeAnswered(s);
        s.lastReceived = now;
      }
    }
    expect(s.counters.probesSent).toBeGreaterThan(20);
  });

  it("a delayed ACK is asked for once received data waited ackDelayMs", () => {
    const s = live(false);
    s.unackedBytes = 10;
    s.unackedSince = 1000;
    s.lastReceived = 1000;
    expect(sweepDecision(s, 1999, o) & SweepAction.ack).toBe(0);
    expect(sweepDecision(s, 2000, o) & SweepAction.ack).toBe(SweepAction.ack);
  });
});

describe("probes", () => {
  it("step back one per probe of a quiet spell, at most MAX_PROBE_STEP, across the wrap", () => {
    const s = live(true);
    s.sndNxt = 2;
    const seqs: number[] = [];
    for (let i = 0; i < MAX_PROBE_STEP + 3; i++) {
      const seq = nextProbeSeq(s);
      seqs.push(seq);
      probeSent(s, seq, i);
    }
    expect(seqs.slice(0, 4)).toEqual([1, 0, -1, -2]); // -1 is 0xffffffff as int32
    expect(seqs.at(-1)).toBe(2 - 1 - MAX_PROBE_STEP);
    expect(s.probesUnanswered).toBe(seqs.length - 1);
  });

  it("only a peer of ours gets answers, only to old seqs, rate-limited", () => {
    const ours = live(true);
    expect(answersProbe(ours, 499, 0, o)).toBe(true);
    expect(answersProbe(ours, 500, 0, o)).toBe(false);
    expect(answersProbe(ours, 501, 0, o)).toBe(false);
    ours.lastAnswerAt = 0;
    expect(answersProbe(ours, 499, 199, o)).toBe(false);
    expect(answersProbe(ours, 499, 200, o)).toBe(true);
    expect(answersProbe(live(false), 499, 0, o)).toBe(false);
  });
});

describe("answers", () => {
  it("an answer echoing any of our last 3 probes counts; older ones, other acks, or after an answer, not", () => {
    const s = live(true);
    expect(isProbeAnswer(s, 0)).toBe(false); // nothing outstanding
    for (let i = 0; i < 5; i++) {
      s.sndNxt = 1000 * (i + 1);
      probeSent(s, nextProbeSeq(s), i);
    }
    const seqs = [999, 1998, 2997, 3996, 4995];
    expect([s.probeSeq, s.probeSeq1, s.probeSeq2]).toEqual(seqs.slice(2).reverse());
    for (const seq of seqs.slice(2)) expect(isProbeAnswer(s, seq)).toBe(true);
    for (const ack of [...seqs.slice(0, 2), 5000, 4996]) expect(isProbeAnswer(s, ack)).toBe(false);
    probeAnswered(s);
    expect(isProbeAnswer(s, 4995)).toBe(false);
    expect(s.counters.probesAnswered).toBe(1);
  });

  it("new data ends the fast check; data behind the highest seq does not", () => {
    const s = live(true);
    s.verifyProbes = 2;
    dataArrived(s, 0, false);
    expect(s.verifyProbes).toBe(2);
    dataArrived(s, 0, true);
    expect(s.verifyProbes).toBe(0);
  });
});

describe("the first keepalive", () => {
  it("seq one below ours only from our client to a server not known to be ours, across the wrap", () => {
    expect(firstKeepaliveSeq({ passive: false, peerIsOurs: false, sndNxt: 0 })).toBe(-1);
    expect(firstKeepaliveSeq({ passive: false, peerIsOurs: false, sndNxt: 1 })).toBe(0);
    expect(firstKeepaliveSeq({ passive: false, peerIsOurs: true, sndNxt: 1 })).toBe(1);
    expect(firstKeepaliveSeq({ passive: true, peerIsOurs: false, sndNxt: 77 })).toBe(77);
    expect(firstKeepaliveSeq({ passive: true, peerIsOurs: true, sndNxt: 77 })).toBe(77);
  });
});

describe("the fast check after a doubtful RST", () => {
  it("probes verifyIntervalMs apart, closes after deadPeerProbes unanswered", () => {
    const s = live(true);
    s.verifyProbes = 1;
    probeSent(s, nextProbeSeq(s), 0);
    const actions: Array<[number, number]> = [];
    for (let now = 100; now <= 2000; now += 100) {
      const a = verifyDecision(s, now, o);
      if (a === VerifyAction.wait) continue;
      actions.push([now, a]);
      if (a === VerifyAction.close) break;
      s.verifyProbes++;
      probeSent(s, nextProbeSeq(s), now);
    }
    expect(actions).toEqual([
      [300, VerifyAction.probe],
      [600, VerifyAction.probe],
      [900, VerifyAction.close],
    ]);
  });
});
