/**
 * The reconnect schedule on a fake clock: the waits, the storm a resetting server would see
 * from one steadily sending peer, the reset after a connection that proved itself, the bound
 * on remembered peers, and the shard-wide meter on repeated retries.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  connectionOutcome,
  FIRST_DELAY_MS,
  FORGET_MS,
  JITTER,
  MAX_DELAY_MS,
  RETRY_BURST,
  RETRY_RATE_PER_SECOND,
  ReconnectBackoff,
  retryDelayMs,
  STABLE_MS,
} from "../src/reconnect-backoff.js";

function backoff(options: { random?: () => number; maxPeers?: number; now?: number } = {}) {
  const deferred: [string, number, number][] = [];
  const b = new ReconnectBackoff({
    maxPeers: options.maxPeers ?? 1000,
    retryRatePerSecond: RETRY_RATE_PER_SECOND,
    retryBurst: RETRY_BURST,
    now: options.now ?? 0,
    random: options.random,
    onDeferred: (key, failures, waitMs) => deferred.push([key, failures, waitMs]),
  });
  return { b, deferred };
}

/**
 * A peer sending every `intervalMs` for `durationMs` through the shard's logic (a datagram
 * with no session asks for a permit; a refused ask waits for the returned time, as a waiting
 * session's timer does) to a server that fails every connection after `failAfterMs`. Returns
 * the times of the connection attempts.
 */
function storm(b: ReconnectBackoff, intervalMs: number, durationMs: number, failAfterMs: number) {
  const attempts: number[] = [];
  let session: "none" | "waiting" | "connected" = "none";
  let wakeAt = 0;
  let failAt = 0;
  for (let now = 0; now <= durationMs; now++) {
    if (session === "connected" && now >= failAt) {
      b.ended("10.0.0.1:5000", now, "failed");
      session = "none";
    }
    const datagram = now % intervalMs === 0;
    const ask = (session === "none" && datagram) || (session === "waiting" && now >= wakeAt);
    if (!ask) continue;
    const wait = b.permit("10.0.0.1:5000", now);
    if (wait > 0) {
      session = "waiting";
      wakeAt = now + wait;
    } else {
      attempts.push(now);
      session = "connected";
      failAt = now + failAfterMs;
    }
  }
  return attempts;
}

describe("retryDelayMs", () => {
  it("retries once at once, then about 0.5 s doubling up to 5 s", () => {
    const nominal = [1, 2, 3, 4, 5, 6, 7, 20].map((f) => retryDelayMs(f, 0.5));
    expect(nominal).toEqual([0, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    expect(retryDelayMs(0, 0.5)).toBe(0);
    expect(retryDelayMs(1_000_000, 0.5)).toBe(MAX_DELAY_MS);
  });

  it("varies each wait by at most a quarter either way", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 100 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (failures, random) => {
          const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (failures - 2));
          const delay = retryDelayMs(failures, random);
          expect(delay).toBeGreaterThanOrEqual(Math.floor(base * (1 - JITTER)));
          expect(delay).toBeLessThanOrEqual(Math.ceil(base * (1 + JITTER)));
        },
      ),
    );
  });
});

describe("connectionOutcome", () => {
  it.each([
    ["peer-reset", undefined, 0, "failed"],
    ["connect-failed", undefined, 0, "failed"],
    ["peer-reset", 50, 3, "failed"],
    ["dead-peer", STABLE_MS - 1, 100, "failed"],
    ["peer-reset", STABLE_MS, 0, "failed"],
    ["peer-reset", STABLE_MS, 1, "stable"],
    ["local", STABLE_MS * 2, 1, "stable"],
    ["evicted", 10, 0, "neutral"],
    ["idle-timeout", undefined, 0, "neutral"],
    ["local", undefined, 0, "neutral"],
  ] as const)(
    "%s after %s ms with %s datagrams from the server: %s",
    (cause, openMs, n, outcome) => {
      expect(connectionOutcome(cause, openMs, n)).toBe(outcome);
    },
  );
});

describe("ReconnectBackoff", () => {
  it("a peer without failures connects at once, and is not counted as a reconnect", () => {
    const { b } = backoff();
    expect(b.permit("p", 0)).toBe(0);
    expect(b.counters).toEqual({ reconnects: 0, reconnectsDeferred: 0 });
  });

  it.each([
    ["shortest", () => 0],
    ["nominal", () => 0.5],
    ["longest", () => 0.999],
  ])(
    "a server failing every connection sees at most 10 attempts in 10 s (%s waits)",
    (_name, random) => {
      const { b } = backoff({ random });
      // A datagram every 20 ms; each connection is reset 5 ms after it starts.
      const attempts = storm(b, 20, 10_000, 5);
      expect(attempts.length).toBeGreaterThanOrEqual(5);
      expect(attempts.length).toBeLessThanOrEqual(10);
      // The first retry goes at once (the next datagram), later ones wait longer each time.
      expect(attempts[1] - attempts[0]).toBeLessThanOrEqual(25);
      const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
      for (let i = 2; i < gaps.length; i++) expect(gaps[i]).toBeGreaterThan(gaps[i - 1] * 1.1);
      // Then settles at the cap: over a minute, one attempt per ~5 s.
      const { b: longer } = backoff({ random });
      const minute = storm(longer, 20, 60_000, 5);
      expect(minute.length).toBeLessThanOrEqual(6 + Math.ceil(50_000 / (MAX_DELAY_MS * 0.75)));
      expect(longer.counters.reconnects).toBe(minute.length - 1);
    },
  );

  it("counts a wait once, however often the waiting peer asks, and reports it", () => {
    const { b, deferred } = backoff({ random: () => 0.5 });
    b.ended("p", 0, "failed");
    b.ended("p", 0, "failed");
    expect(b.permit("p", 10)).toBe(490);
    expect(b.permit("p", 20)).toBe(480);
    expect(b.counters.reconnectsDeferred).toBe(1);
    expect(deferred).toEqual([["p", 2, 490]]);
    expect(b.permit("p", 500)).toBe(0);
    expect(b.counters).toEqual({ reconnects: 1, reconnectsDeferred: 1 });
  });

  it("keeps the schedule while the peer has no session: the state is the backoff's own", () => {
    const { b } = backoff({ random: () => 0.5 });
    // Two failed connections, each session gone from the peer table since.
    b.ended("p", 0, "failed");
    expect(b.permit("p", 1)).toBe(0);
    b.ended("p", 2, "failed");
    expect(b.permit("p", 3)).toBeGreaterThan(0);
    expect(b.failures("p", 3)).toBe(2);
    // Another peer is unaffected.
    expect(b.permit("q", 3)).toBe(0);
  });

  it("a connection that stayed up and carried traffic starts the schedule over", () => {
    const { b } = backoff({ random: () => 0.5 });
    for (let i = 0; i < 6; i++) b.ended("p", 0, "failed");
    expect(b.permit("p", 0)).toBe(MAX_DELAY_MS);
    b.ended("p", 6_000, connectionOutcome("peer-reset", STABLE_MS, 1));
    expect(b.failures("p", 6_000)).toBe(0);
    expect(b.permit("p", 6_000)).toBe(0);
    // A neutral end (the client's own eviction) neither clears nor adds.
    b.ended("q", 0, "failed");
    b.ended("q", 0, "failed");
    b.ended("q", 1, connectionOutcome("evicted", 1, 0));
    expect(b.failures("q", 1)).toBe(2);
  });

  it("forgets a schedule a while after its last failure", () => {
    const { b } = backoff({ random: () => 0.5 });
    b.ended("p", 0, "failed");
    b.ended("p", 0, "failed");
    expect(b.failures("p", FORGET_MS)).toBe(2);
    expect(b.failures("p", FORGET_MS + 1)).toBe(0);
    expect(b.size).toBe(0);
  });

  it("remembers at most maxPeers schedules (a flood of peers pushes out the oldest)", () => {
    const { b } = backoff({ maxPeers: 100 });
    for (let i = 0; i < 10_000; i++) b.ended(`10.0.${i >> 8}.${i & 255}:1`, i, "failed");
    expect(b.size).toBe(100);
    expect(b.failures("10.0.39.15:1", 10_000)).toBe(1); // peer 9999, the newest
    expect(b.failures("10.0.0.0:1", 10_000)).toBe(0);
    // Expired schedules go first, without waiting for the bound.
    b.ended("late:1", 10_000 + FORGET_MS + 1, "failed");
    expect(b.size).toBe(1);
  });

  it("meters retries of peers failing again: a handful a second over every peer", () => {
    const { b } = backoff({ random: () => 0.5 });
    const peers = Array.from({ length: 200 }, (_, i) => `10.0.0.${i}:1`);
    // Every peer failed twice: each may retry after ~0.5 s by its own schedule.
    for (const p of peers) {
      b.ended(p, 0, "failed");
      b.ended(p, 0, "failed");
    }
    // Every peer asks every 10 ms for 10 s; an attempt fails again at once.
    let attempts = 0;
    for (let now = 0; now <= 10_000; now += 10) {
      for (const p of peers) {
        if (b.permit(p, now) === 0) {
          attempts++;
          b.ended(p, now, "failed");
        }
      }
    }
    expect(attempts).toBeLessThanOrEqual(RETRY_BURST + RETRY_RATE_PER_SECOND * 10);
    expect(attempts).toBeGreaterThanOrEqual(RETRY_RATE_PER_SECOND * 10);
  });
});
