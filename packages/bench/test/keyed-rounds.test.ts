import { describe, expect, it } from "vitest";
import {
  type KeyedComparison,
  type KeyedRoundStep,
  keyedMedians,
  median,
  renderKeyedRounds,
  roundCpuPerGigabit,
  roundOrder,
} from "../src/keyed-rounds.js";

function step(
  keyed: boolean,
  direction: "A→B" | "B→A",
  offeredMbit: number,
  deliveredMbit: number,
  cpu: number,
): KeyedRoundStep {
  return {
    keyed,
    round: 0,
    direction,
    offeredBps: offeredMbit * 1e6,
    deliveredBps: deliveredMbit * 1e6,
    lossPercent: 0,
    seconds: 4,
    tunnelCpuSeconds: cpu,
  };
}

describe("keyed vs unkeyed rounds", () => {
  it("alternates which mode goes first, each mode as often as the other", () => {
    expect(roundOrder(4)).toEqual([false, true, true, false, false, true, true, false]);
    expect(roundOrder(3).filter((k) => k).length).toBe(3);
    expect(roundOrder(0)).toEqual([]);
  });

  it("takes medians of odd and even counts, null for none", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNull();
  });

  it("CPU per gigabit is CPU seconds over delivered gigabits; null when nothing arrived", () => {
    expect(roundCpuPerGigabit(step(false, "A→B", 300, 250, 2))).toBeCloseTo(2 / 1, 9);
    expect(roundCpuPerGigabit(step(false, "A→B", 300, 0, 2))).toBeNull();
  });

  it("compares medians per mode, direction and rate, and renders the ratios", () => {
    const cmp: KeyedComparison = {
      rounds: 2,
      fixedBps: 300e6,
      saturatingBps: 2e9,
      stepSeconds: 4,
      steps: [
        step(false, "A→B", 300, 250, 2),
        step(false, "A→B", 300, 250, 4),
        step(true, "A→B", 300, 250, 3),
        step(true, "A→B", 300, 250, 3.3),
        step(false, "A→B", 2000, 500, 4),
        step(true, "A→B", 2000, 525, 4),
        step(false, "B→A", 300, 300, 2.4),
        step(true, "B→A", 300, 300, 2.4),
      ],
      errors: ["round 2, keyed B→A 2000 Mbit/s: iperf3 hung"],
    };
    const u = keyedMedians(cmp, false, "A→B", 300e6);
    expect(u.cpuPerGbit).toBeCloseTo(3, 9);
    expect(u.samples).toBe(2);
    expect(keyedMedians(cmp, true, "A→B", 300e6).cpuPerGbit).toBeCloseTo(3.15, 9);
    const table = renderKeyedRounds(cmp);
    expect(table).toContain(
      "| tunnel CPU s per Gbit at 300 Mbit/s, A→B (client + server) | 3.000 | 3.150 | 1.050 |",
    );
    expect(table).toContain(
      "| delivered at 2000 Mbit/s offered (saturating), A→B (Mbit/s) | 500.0 | 525.0 | 1.050 |",
    );
    expect(table).toContain(
      "| delivered at 2000 Mbit/s offered (saturating), B→A (Mbit/s) | – | – | – |",
    );
    expect(table).toContain("- not measured: `round 2, keyed B→A 2000 Mbit/s: iperf3 hung`");
  });
});
