/**
 * The one token bucket (the stack's RST replies, the client's new peers and reconnects).
 */
import { describe, expect, it } from "vitest";
import { TokenBucket } from "../src/index.js";

describe("TokenBucket", () => {
  it("gives the burst at once, then one token per 1000 / rate ms", () => {
    const b = new TokenBucket(4, 3, 0);
    expect([b.take(0), b.take(0), b.take(0), b.take(0)]).toEqual([true, true, true, false]);
    expect(b.waitMs(0)).toBe(250);
    expect(b.take(249)).toBe(false);
    expect(b.waitMs(249)).toBeGreaterThan(0); // 1 ms, give or take the float's last bit
    expect(b.waitMs(249)).toBeLessThanOrEqual(2);
    expect(b.take(250)).toBe(true);
    expect(b.waitMs(250)).toBe(250);
  });

  it("saves up at most the burst, and a clock going back adds nothing", () => {
    const b = new TokenBucket(1000, 2, 0);
    b.take(0);
    b.take(0);
    let taken = 0;
    for (let i = 0; i < 10; i++) if (b.take(60_000)) taken++;
    expect(taken).toBe(2);
    expect(b.take(1_000)).toBe(false);
    expect(b.waitMs(1_000)).toBe(1);
  });

  it("a rate or burst of 0 never gives a token", () => {
    const none = new TokenBucket(0, 0, 0);
    expect(none.take(1e9)).toBe(false);
    expect(none.waitMs(1e9)).toBe(Number.POSITIVE_INFINITY);
    const noRefill = new TokenBucket(0, 1, 0);
    expect(noRefill.take(0)).toBe(true);
    expect(noRefill.take(1e9)).toBe(false);
    expect(noRefill.waitMs(1e9)).toBe(Number.POSITIVE_INFINITY);
  });

  it("refuses a negative or missing rate or burst", () => {
    expect(() => new TokenBucket(-1, 1, 0)).toThrow(RangeError);
    expect(() => new TokenBucket(1, Number.NaN, 0)).toThrow(RangeError);
  });
});
