import { describe, expect, it } from "vitest";
import { parseBenchArgs } from "../src/cli-options.js";
import { appendRun, SECTION_TITLE } from "../src/docs-file.js";
import { percentile } from "../src/percentile.js";
import { parseProcStat } from "../src/proc-stat.js";
import { logRange, logTicks, renderRateChart } from "../src/svg-chart.js";
import { RateSweep, type SweepConfig } from "../src/sweep.js";

/** Drives a sweep against a path that loses everything above `capacityBps`. */
function runSweep(config: SweepConfig, capacityBps: number, senderMaxBps = Infinity): RateSweep {
  const sweep = new RateSweep(config);
  for (let rate = sweep.next(), guard = 0; rate !== null && guard < 100; rate = sweep.next()) {
    guard++;
    const sent = Math.min(rate, senderMaxBps);
    const delivered = Math.min(sent, capacityBps);
    sweep.record({
      offeredBps: rate,
      sentBps: sent,
      deliveredBps: delivered,
      lossPercent: ((sent - delivered) / sent) * 100,
    });
  }
  return sweep;
}

const base: SweepConfig = {
  startBps: 100e6,
  maxBps: 6.4e9,
  minBps: 10e6,
  bisectSteps: 3,
  maxSteps: 10,
};

describe("RateSweep", () => {
  it("doubles until loss, then bisects towards the capacity", () => {
    const sweep = runSweep(base, 700e6);
    const offered = sweep.steps.map((s) => s.offeredBps / 1e6);
    expect(offered).toEqual([100, 200, 400, 800, 600, 700, 750]);
    expect(sweep.best?.offeredBps).toBe(700e6);
    expect(sweep.end).toBe("bracketed");
  });

  it("halves when the start rate already loses too much", () => {
    const sweep = runSweep(base, 30e6);
    expect(sweep.steps.map((s) => s.offeredBps / 1e6).slice(0, 3)).toEqual([100, 50, 25]);
    expect(sweep.best?.offeredBps).toBeLessThanOrEqual(30e6);
    expect(sweep.best?.offeredBps).toBeGreaterThan(25e6 - 1);
  });

  it("reports no good rate when even the minimum loses", () => {
    const sweep = runSweep(base, 1e6);
    expect(sweep.best).toBeNull();
    expect(sweep.end).toBe("min-rate");
    expect(sweep.steps.at(-1)?.offeredBps).toBeGreaterThanOrEqual(base.minBps);
  });

  it("stops at the maximum rate when nothing is lost", () => {
    const sweep = runSweep({ ...base, maxBps: 500e6 }, 1e12);
    expect(sweep.steps.map((s) => s.offeredBps / 1e6)).toEqual([100, 200, 400, 500]);
    expect(sweep.end).toBe("max-rate");
  });

  it("stops when the sender cannot reach the offered rate", () => {
    const sweep = runSweep(base, 1e12, 900e6);
    expect(sweep.end).toBe("sender-limited");
    expect(sweep.best?.offeredBps).toBe(1600e6);
  });

  it("reports the good step that delivered the most, not the highest offer", () => {
    const sweep = new RateSweep(base);
    sweep.record({ offeredBps: 3200e6, sentBps: 2900e6, deliveredBps: 2890e6, lossPercent: 0.5 });
    sweep.record({ offeredBps: 6400e6, sentBps: 2400e6, deliveredBps: 2380e6, lossPercent: 0.8 });
    expect(sweep.end).toBe("sender-limited");
    expect(sweep.best?.offeredBps).toBe(3200e6);
  });

  it("never exceeds maxSteps", () => {
    const sweep = runSweep({ ...base, maxSteps: 3, bisectSteps: 10 }, 350e6);
    expect(sweep.steps.length).toBe(3);
    expect(sweep.end).toBe("max-steps");
    expect(sweep.next()).toBeNull();
    expect(() =>
      sweep.record({ offeredBps: 1, sentBps: 1, deliveredBps: 1, lossPercent: 0 }),
    ).toThrow();
  });

  it("counts exactly 1 % loss as bad", () => {
    const sweep = new RateSweep(base);
    sweep.record({ offeredBps: 100e6, sentBps: 100e6, deliveredBps: 99e6, lossPercent: 1 });
    expect(sweep.best).toBeNull();
    expect(sweep.next()).toBe(50e6);
  });

  it("measures the first bad rate again when asked, and believes the retry", () => {
    const sweep = new RateSweep({ ...base, retryFirstBad: true });
    const measure = (offered: number, loss: number) =>
      sweep.record({
        offeredBps: offered,
        sentBps: offered,
        deliveredBps: offered,
        lossPercent: loss,
      });
    measure(100e6, 0);
    measure(200e6, 3); // noise
    expect(sweep.next()).toBe(200e6);
    measure(200e6, 0);
    expect(sweep.next()).toBe(400e6);
    measure(400e6, 5); // bad, but the retry is spent
    expect(sweep.next()).toBe(300e6);
    expect(sweep.best?.offeredBps).toBe(200e6);
  });

  it("rejects impossible configurations", () => {
    expect(() => new RateSweep({ ...base, startBps: 0 })).toThrow(RangeError);
    expect(() => new RateSweep({ ...base, maxBps: 1 })).toThrow(RangeError);
  });
});

describe("percentile", () => {
  it("uses the nearest rank", () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
    expect(percentile(values, 50)).toBe(50);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile(values, 100)).toBe(100);
    expect(percentile(values, 0)).toBe(1);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([3, 1, 2], 50)).toBe(2);
  });

  it("gives NaN without samples and rejects bad percentiles", () => {
    expect(percentile([], 50)).toBeNaN();
    expect(() => percentile([1], 101)).toThrow(RangeError);
    expect(() => percentile([1], Number.NaN)).toThrow(RangeError);
  });
});

describe("parseProcStat", () => {
  it("reads utime and stime past a command name with spaces and parentheses", () => {
    const text =
      "1234 (node (main) x) S 1 1234 1234 0 -1 4194560 5000 0 0 0 321 123 0 0 20 0 11 0 " +
      "100 1000000 5000 18446744073709551615 1 1 0 0 0 0 0 16781312 17922 0 0 0 17 1 0 0 0 0 0\n";
    expect(parseProcStat(text)).toEqual({ utime: 321, stime: 123 });
  });

  it("reads this process's own stat: the CPU time the process reports itself", async () => {
    const { readFileSync } = await import("node:fs");
    const ticks = parseProcStat(readFileSync("/proc/self/stat", "utf8"));
    // getrusage (process.cpuUsage) counts the same time in microseconds; /proc in ticks of
    // 1/100 s (USER_HZ on Linux). Read second, it can only be ahead, by a few ticks at most;
    // any other field of the line would be far off.
    const usage = process.cpuUsage();
    for (const [fromProc, micros] of [
      [ticks.utime, usage.user],
      [ticks.stime, usage.system],
    ]) {
      expect(micros / 10_000 - fromProc).toBeGreaterThanOrEqual(-1);
      expect(micros / 10_000 - fromProc).toBeLessThan(10);
    }
    expect(ticks.utime).toBeGreaterThan(0);
  });

  it("rejects malformed text", () => {
    expect(() => parseProcStat("garbage")).toThrow();
    expect(() => parseProcStat("1 (x) S 1 2")).toThrow();
  });
});

describe("renderRateChart", () => {
  it("draws one polyline per non-empty series, escaped labels and round ticks", () => {
    const svg = renderRateChart("rates <test> & more", [
      {
        name: "direct A→B",
        color: "#00f",
        points: [
          { x: 100, y: 100 },
          { x: 200, y: 190 },
        ],
      },
      { name: "tunnel <x>", color: "#f00", dashed: true, points: [{ x: 100, y: 90 }] },
      { name: "empty", color: "#0f0", points: [] },
    ]);
    expect(svg.startsWith("<svg xmlns")).toBe(true);
    expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
    expect(svg.match(/<polyline /g)?.length).toBe(2);
    expect(svg.match(/<circle /g)?.length).toBe(3);
    expect(svg).toContain("rates &lt;test&gt; &amp; more");
    expect(svg).toContain("tunnel &lt;x&gt;");
    expect(svg).not.toContain("<x>");
    expect(svg).toContain(">200<");
    expect(svg).not.toMatch(/NaN|Infinity/);
  });

  it("spans whole decades with 1-2-5 ticks", () => {
    expect(logRange([100, 3200, 0])).toEqual([100, 10000]);
    expect(logRange([100])).toEqual([100, 1000]);
    expect(logRange([99.9, 3119])).toEqual([100, 10000]);
    expect(logRange([90, 3119])).toEqual([10, 10000]);
    expect(logRange([])).toEqual([1, 10]);
    expect(logTicks(100, 10000)).toEqual([100, 200, 500, 1000, 2000, 5000, 10000]);
  });
});

describe("appendRun", () => {
  const run = "### Run 2026-01-01T00:00:00.000Z — x\n\nbody\n";

  it("creates the file and the section when missing", () => {
    const text = appendRun(null, run);
    expect(text.startsWith("# Benchmarks\n")).toBe(true);
    expect(text).toContain(SECTION_TITLE);
    expect(text.indexOf(SECTION_TITLE)).toBeLessThan(text.indexOf("### Run"));
  });

  it("appends inside the section, before the next one, leaving others untouched", () => {
    const other = "## Stack (pnpm bench:stack)\n\nstack figures\n";
    const first = appendRun(`# Benchmarks\n\n## TUN\n\ntun figures\n\n${other}`, run);
    const withNext = `${first}\n${other.replace("Stack", "Later")}`;
    const second = appendRun(withNext, run.replace("— x", "— y"));
    expect(second).toContain("tun figures");
    expect(second).toContain("stack figures");
    const x = second.indexOf("— x");
    const y = second.indexOf("— y");
    const later = second.indexOf("## Later");
    expect(x).toBeGreaterThan(second.indexOf(SECTION_TITLE));
    expect(y).toBeGreaterThan(x);
    expect(later).toBeGreaterThan(y);
    expect(second.match(/## Tunnel \(pnpm bench\)/g)?.length).toBe(1);
  });
});

describe("parseBenchArgs", () => {
  it("parses the flags", () => {
    expect(parseBenchArgs([])).toEqual({
      label: "run",
      quick: false,
      noDocs: false,
      docsDir: null,
      keyed: false,
      singleFlow: false,
      defaultBuffers: true,
      udpRuns: [],
      connections: null,
      pace: 100,
      latencyRounds: null,
      help: false,
    });
    expect(parseBenchArgs(["--latency-only"]).latencyRounds).toBe(3);
    expect(parseBenchArgs(["--rounds", "5", "--latency-only"]).latencyRounds).toBe(5);
    expect(parseBenchArgs(["--keyed"]).keyed).toBe(true);
    expect(parseBenchArgs(["--single-flow"]).singleFlow).toBe(true);
    expect(parseBenchArgs(["--buffers", "4m"]).defaultBuffers).toBe(false);
    expect(parseBenchArgs(["--buffers", "default,4m"]).defaultBuffers).toBe(true);
    expect(parseBenchArgs(["--udp-run", "8,64,8"]).udpRuns).toEqual([8, 64]);
    expect(parseBenchArgs(["--docs-dir", "/tmp/x"]).docsDir).toBe("/tmp/x");
    expect(parseBenchArgs(["--label", "before", "--quick"]).label).toBe("before");
    expect(parseBenchArgs(["--label=after", "--no-docs"])).toMatchObject({
      label: "after",
      noDocs: true,
    });
  });

  it("rejects bad input", () => {
    expect(() => parseBenchArgs(["--label"])).toThrow(/needs a name/);
    expect(() => parseBenchArgs(["--label", "--quick"])).toThrow(/needs a name/);
    expect(() => parseBenchArgs(["--label", "a/b"])).toThrow();
    expect(() => parseBenchArgs(["--fast"])).toThrow(/unknown/);
    expect(() => parseBenchArgs(["--docs-dir"])).toThrow(/needs a directory/);
    expect(() => parseBenchArgs(["--buffers", "default"])).toThrow(/--buffers/);
    expect(() => parseBenchArgs(["--buffers", "4m,1m"])).toThrow(/--buffers/);
    expect(() => parseBenchArgs(["--udp-run", "0"])).toThrow(/--udp-run/);
    expect(() => parseBenchArgs(["--udp-run", "65"])).toThrow(/--udp-run/);
    expect(() => parseBenchArgs(["--udp-run"])).toThrow(/--udp-run/);
    expect(() => parseBenchArgs(["--rounds", "2"])).toThrow(/goes with --latency-only/);
    expect(() => parseBenchArgs(["--latency-only", "--rounds", "0"])).toThrow(/--rounds/);
    expect(() => parseBenchArgs(["--latency-only", "--rounds", "21"])).toThrow(/--rounds/);
    expect(() => parseBenchArgs(["--latency-only", "--rounds"])).toThrow(/--rounds/);
    expect(() => parseBenchArgs(["--latency-only", "--keyed"])).toThrow(/runs alone/);
    expect(() => parseBenchArgs(["--latency-only", "--connections", "1000"])).toThrow(/runs alone/);
  });
});
