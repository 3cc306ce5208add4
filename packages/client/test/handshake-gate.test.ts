/**
 * The handshake gate on its own, with a fake clock and turns that only record: the bound on
 * turns running at once, first come first served, waiters that left never run, every ending
 * frees its slot, and how the bound adapts.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  HandshakeGate,
  type HandshakeOutcome,
  handshakeOutcomeOf,
  type ReleaseHandshake,
  SLOW_HANDSHAKE_MS,
} from "../src/handshake-gate.js";

/** A gate on a fake clock, recording which turns ran and holding their release functions. */
function harness(initial: number, min = 1, max = 1_000) {
  let clock = 0;
  const gate = new HandshakeGate({ initial, min, max, now: () => clock });
  const started: number[] = [];
  const releases = new Map<number, ReleaseHandshake>();
  const enter = (id: number) =>
    gate.enter((release) => {
      started.push(id);
      releases.set(id, release);
    });
  const end = (id: number, outcome: HandshakeOutcome = "failed") => {
    const release = releases.get(id);
    if (release === undefined) throw new Error(`turn ${id} never ran`);
    releases.delete(id);
    release(outcome);
  };
  return {
    gate,
    started,
    releases,
    enter,
    end,
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

describe("HandshakeGate", () => {
  it("runs at most the bound at once and the rest first come, first served", () => {
    const h = harness(3);
    for (let id = 0; id < 10; id++) h.enter(id);
    expect(h.started).toEqual([0, 1, 2]);
    expect(h.gate.counters).toMatchObject({
      handshakesInFlight: 3,
      handshakesWaiting: 7,
      handshakesQueued: 7,
    });
    h.end(1);
    expect(h.started).toEqual([0, 1, 2, 3]);
    h.end(0);
    h.end(2);
    expect(h.started).toEqual([0, 1, 2, 3, 4, 5]);
    // A newcomer queues behind those already waiting, even when a slot is free at that moment.
    h.end(3);
    h.enter(10);
    expect(h.started).toEqual([0, 1, 2, 3, 4, 5, 6]);
    for (const id of [4, 5, 6, 7, 8, 9]) h.end(id);
    expect(h.started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(h.gate.counters.handshakesWaiting).toBe(0);
    expect(h.gate.counters.handshakesQueued).toBe(8);
  });

  it("never runs a waiter that left the queue, and gives its place to the next", () => {
    const h = harness(1);
    h.enter(0);
    const leave1 = h.enter(1);
    h.enter(2);
    const leave3 = h.enter(3);
    leave1();
    leave3();
    expect(h.gate.counters.handshakesWaiting).toBe(1);
    h.end(0);
    expect(h.started).toEqual([0, 2]);
    h.end(2);
    expect(h.started).toEqual([0, 2]);
    expect(h.gate.counters).toMatchObject({ handshakesInFlight: 0, handshakesWaiting: 0 });
    // Leaving after the turn came, or twice, changes nothing.
    leave1();
    expect(h.gate.counters).toMatchObject({ handshakesInFlight: 0, handshakesWaiting: 0 });
  });

  it("frees the slot on every ending, once however often release is called", () => {
    const h = harness(2);
    for (let id = 0; id < 5; id++) h.enter(id);
    const release0 = h.releases.get(0)!;
    release0("failed");
    release0("failed");
    release0("completed");
    expect(h.gate.counters.handshakesInFlight).toBe(2);
    expect(h.started).toEqual([0, 1, 2]);
    h.end(1, "timed-out");
    h.end(2, "completed");
    expect(h.started).toEqual([0, 1, 2, 3, 4]);
  });

  it("frees the slot of a turn that throws", () => {
    const h = harness(1);
    expect(() =>
      h.gate.enter(() => {
        throw new Error("bug");
      }),
    ).toThrow("bug");
    h.enter(1);
    expect(h.started).toEqual([1]);
  });

  it("clear() drops every waiter; those running still end normally", () => {
    const h = harness(1);
    h.enter(0);
    h.enter(1);
    h.gate.clear();
    h.end(0);
    expect(h.started).toEqual([0]);
    expect(h.gate.counters).toMatchObject({ handshakesInFlight: 0, handshakesWaiting: 0 });
  });

  it("run() holds a slot until the task settles, rejection included", async () => {
    const gate = new HandshakeGate({ initial: 1, min: 1 });
    let finish!: (ok: boolean) => void;
    const first = gate.run(
      () =>
        new Promise<string>((resolve, reject) => {
          finish = (ok) => (ok ? resolve("a") : reject(new Error("refused")));
        }),
      handshakeOutcomeOf,
    );
    let secondRan = false;
    const second = gate.run(async () => {
      secondRan = true;
      return "b";
    }, handshakeOutcomeOf);
    await Promise.resolve();
    expect(secondRan).toBe(false);
    finish(false);
    await expect(first).rejects.toThrow("refused");
    await expect(second).resolves.toBe("b");
    expect(gate.counters.handshakesInFlight).toBe(0);
  });

  it("grows while handshakes complete fast with others waiting; halves on late ones, once per period", () => {
    const h = harness(4, 2, 6);
    for (let id = 0; id < 20; id++) h.enter(id);
    h.end(0, "completed");
    h.end(1, "completed");
    expect(h.gate.counters.handshakeLimit).toBe(6);
    h.end(2, "completed"); // capped at max
    expect(h.gate.counters.handshakeLimit).toBe(6);
    // Late: a SYN had to be sent again.
    h.advance(SLOW_HANDSHAKE_MS + 1);
    h.end(3, "completed");
    expect(h.gate.counters.handshakeLimit).toBe(3);
    // The others of the same cohort are late too: no further cut within the period.
    h.end(4, "timed-out");
    h.end(5, "completed");
    expect(h.gate.counters.handshakeLimit).toBe(3);
    h.advance(SLOW_HANDSHAKE_MS);
    h.end(6, "timed-out");
    expect(h.gate.counters.handshakeLimit).toBe(2); // floor at min
    // Refusals say nothing about load.
    h.advance(SLOW_HANDSHAKE_MS);
    const running = [...h.releases.keys()];
    h.end(running[0], "failed");
    expect(h.gate.counters.handshakeLimit).toBe(2);
  });

  it("does not grow while nobody waits", () => {
    const h = harness(2);
    h.enter(0);
    h.end(0, "completed");
    expect(h.gate.counters.handshakeLimit).toBe(2);
  });

  it("keeps its invariants over any sequence of arrivals, departures and endings", () => {
    type Op =
      | { kind: "enter" }
      | { kind: "leave"; pick: number }
      | { kind: "end"; pick: number; outcome: HandshakeOutcome; ms: number };
    const op = fc.oneof(
      fc.constant<Op>({ kind: "enter" }),
      fc.record({ kind: fc.constant("leave" as const), pick: fc.nat() }),
      fc.record({
        kind: fc.constant("end" as const),
        pick: fc.nat(),
        outcome: fc.constantFrom<HandshakeOutcome>("completed", "timed-out", "failed"),
        ms: fc.nat({ max: 3_000 }),
      }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(op, { maxLength: 200 }),
        (initial, ops) => {
          const h = harness(initial, 1, 16);
          const leaves = new Map<number, () => void>();
          const left = new Set<number>();
          let next = 0;
          for (const o of ops) {
            if (o.kind === "enter") {
              const id = next++;
              leaves.set(id, h.enter(id));
            } else if (o.kind === "leave" && leaves.size > 0) {
              const ids = [...leaves.keys()];
              const id = ids[o.pick % ids.length];
              if (!h.started.includes(id)) left.add(id);
              leaves.get(id)!();
              leaves.delete(id);
            } else if (o.kind === "end" && h.releases.size > 0) {
              const ids = [...h.releases.keys()];
              h.advance(o.ms);
              h.end(ids[o.pick % ids.length], o.outcome);
            }
            const c = h.gate.counters;
            expect(c.handshakesInFlight).toBe(h.releases.size);
            // Never beyond the largest bound (after a cut, those running finish in their time).
            expect(c.handshakesInFlight).toBeLessThanOrEqual(16);
            expect(c.handshakeLimit).toBeGreaterThanOrEqual(1);
            // Nobody waits while a slot is free.
            if (c.handshakesWaiting > 0)
              expect(c.handshakesInFlight).toBeGreaterThanOrEqual(c.handshakeLimit);
          }
          // Runs in arrival order, and never one that left before its turn.
          expect([...h.started].sort((a, b) => a - b)).toEqual(h.started);
          for (const id of left) expect(h.started).not.toContain(id);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("takes a timeout as a sign of load and anything else as a refusal", () => {
    expect(handshakeOutcomeOf(Object.assign(new Error("t"), { code: "ETIMEDOUT" }))).toBe(
      "timed-out",
    );
    expect(handshakeOutcomeOf(Object.assign(new Error("r"), { code: "ECONNREFUSED" }))).toBe(
      "failed",
    );
    expect(handshakeOutcomeOf(undefined)).toBe("failed");
  });
});
