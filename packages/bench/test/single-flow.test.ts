import { describe, expect, it } from "vitest";
import { type DirectionResult, renderSingleFlow } from "../src/single-flow.js";

const meta = {
  startedAt: new Date("2026-12-01T08:13:00Z"),
  loadStart: 0.3,
  loadEnd: 2,
  commit: "abc1234",
  cores: 2,
  quick: false,
};

function direction(d: Partial<DirectionResult>): DirectionResult {
  return {
    direction: "A→B",
    bestBps: 623.4e6,
    lossPercent: 0,
    stepSeconds: 3,
    threads: [
      { program: "client", thread: "1 node", seconds: 1.5 },
      { program: "server", thread: "2 node", seconds: 0.9 },
    ],
    end: "bracketed",
    ...d,
  };
}

describe("single-flow section", () => {
  it("marks a rate that iperf3 could not exceed as the sender's, and one the tunnel bounded as is", () => {
    const text = renderSingleFlow(
      [
        {
          config: "--queues 1",
          forward: direction({ end: "sender-limited" }),
          reverse: direction({ direction: "B→A", bestBps: 975.4e6 }),
          reorder: [],
          errors: [],
        },
      ],
      meta,
    );
    const row = text.split("\n").find((l) => l.startsWith("| --queues 1 |"));
    expect(row).toBe(
      "| --queues 1 | 623.4 (sender-limited) | 50 % | 30 % | 975.4 | 50 % | 30 % | - |",
    );
  });
});
