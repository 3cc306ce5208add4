/** Sequence-number arithmetic modulo 2^32 (seq.ts), wrap-around included. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  seqAdd,
  seqDiff,
  seqGe,
  seqGt,
  seqInWindow,
  seqLe,
  seqLt,
  seqMax,
} from "../src/stack/seq.js";

/** Any sequence number, as the stack keeps them: int32. */
const seq = fc.integer({ min: 0, max: 0xffffffff }).map((x) => x | 0);
/** A distance strictly inside half the space, where "before" and "after" are defined. */
const dist = fc.integer({ min: 1, max: 2 ** 31 - 1 });

describe("seq.ts", () => {
  it("wraps at 2^32 and stays int32", () => {
    expect(seqAdd(0xffffffff | 0, 1)).toBe(0);
    expect(seqAdd(0x7fffffff, 1)).toBe(-0x80000000);
    expect(seqDiff(0, 0xffffffff | 0)).toBe(1);
    expect(seqDiff(5, 0xfffffffb | 0)).toBe(10);
    expect(seqLt(0xfffffff0 | 0, 16)).toBe(true);
    expect(seqGt(16, 0xfffffff0 | 0)).toBe(true);
    expect(seqMax(0xfffffff0 | 0, 16)).toBe(16);
    // Exactly half the space apart: the int32 difference is -2^31 either way round.
    expect(seqLt(0, 2 ** 31)).toBe(true);
    expect(seqLt(2 ** 31, 0)).toBe(true);
  });

  it("a + d comes after a for any 0 < d < 2^31, across the wrap", () => {
    fc.assert(
      fc.property(seq, dist, (a, d) => {
        const b = seqAdd(a, d);
        expect(b).toBe(b | 0);
        expect(seqLt(a, b)).toBe(true);
        expect(seqLe(a, b)).toBe(true);
        expect(seqGt(b, a)).toBe(true);
        expect(seqGe(b, a)).toBe(true);
        expect(seqLt(b, a)).toBe(false);
        expect(seqGe(a, b)).toBe(false);
        expect(seqDiff(b, a)).toBe(d);
        expect(seqDiff(a, b)).toBe(-d);
        expect(seqMax(a, b)).toBe(b);
        expect(seqMax(b, a)).toBe(b);
      }),
    );
  });

  it("equal numbers: neither before nor after; the window takes them", () => {
    fc.assert(
      fc.property(seq, (a) => {
        expect(seqLt(a, a) || seqGt(a, a)).toBe(false);
        expect(seqLe(a, a) && seqGe(a, a)).toBe(true);
        expect(seqDiff(a, a)).toBe(0);
        expect(seqInWindow(a, a, 0, 0)).toBe(true);
      }),
    );
  });

  it("seqInWindow is exactly [base - behind, base + ahead], wherever base is", () => {
    const half = fc.integer({ min: 0, max: 2 ** 30 - 1 });
    fc.assert(
      fc.property(
        seq,
        half,
        half,
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        (base, behind, ahead, d) => {
          const x = seqAdd(base, d);
          expect(seqInWindow(x, base, behind, ahead)).toBe(d >= -behind && d <= ahead);
          expect(seqInWindow(seqAdd(base, ahead), base, behind, ahead)).toBe(true);
          expect(seqInWindow(seqAdd(base, ahead + 1), base, behind, ahead)).toBe(false);
          expect(seqInWindow(seqAdd(base, -behind), base, behind, ahead)).toBe(true);
          expect(seqInWindow(seqAdd(base, -behind - 1), base, behind, ahead)).toBe(false);
        },
      ),
    );
  });
});
