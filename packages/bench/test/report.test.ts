import { describe, expect, it } from "vitest";
import {
  chartSeries,
  oneLine,
  renderBuffersTable,
  renderHeadline,
  renderKeyedTable,
  renderRunSection,
  renderTable,
} from "../src/report.js";
import { type BenchRun, emptyModeResult } from "../src/results.js";
import type { MeasuredStep, SweepResult } from "../src/throughput.js";

function step(offeredMbit: number, deliveredMbit: number, cpu: number | null): MeasuredStep {
  return {
    offeredBps: offeredMbit * 1e6,
    sentBps: offeredMbit * 1e6,
    deliveredBps: deliveredMbit * 1e6,
    lossPercent: ((offeredMbit - deliveredMbit) / offeredMbit) * 100,
    seconds: 2,
    tunnelCpuSeconds: cpu,
  };
}

function sweep(direction: "A→B" | "B→A", best: MeasuredStep, bad: MeasuredStep): SweepResult {
  return { direction, steps: [best, bad], best, end: "bracketed", failedRuns: 0 };
}

function makeRun(): BenchRun {
  const direct = emptyModeResult("direct");
  const tunnel = emptyModeResult("tunnel");
  direct.forward = sweep("A→B", step(800, 800, null), step(1600, 1200, null));
  direct.reverse = sweep("B→A", step(400, 400, null), step(800, 700, null));
  tunnel.forward = sweep("A→B", step(200, 200, 0.8), step(400, 300, 1));
  tunnel.latencyIdle = { sent: 100, received: 99, p50Us: 150, p99Us: 900 };
  direct.latencyIdle = { sent: 100, received: 100, p50Us: 100, p99Us: 700 };
  tunnel.scale = {
    flows: 1000,
    answered: 1000,
    datagramsSent: 2300,
    allAnsweredMs: 800,
    medianFirstReplyMs: 300,
    flowsPerSecond: 1250,
    rss: { client: [64 * 1048576, 70 * 1048576], server: [60 * 1048576, null] },
    connectionsOpened: { client: 1000, server: 1000 },
  };
  tunnel.errors = [
    "rate sweep B→A: server@S exited (1)\n  [server@S stdout] {}\n  [server@S stderr] boom",
    "echo latency, idle: no echo",
  ];
  return {
    label: "before",
    quick: false,
    startedAt: new Date("2026-11-23T10:00:00Z"),
    durationSeconds: 300,
    cores: 2,
    nodeVersion: "v20.0.0",
    commit: "abc1234",
    loadAverage: 1.5,
    loadAverageEnd: 1.7,
    settings: {
      startBps: 200e6,
      stepSeconds: 2,
      probes: 100,
      probeIntervalMs: 5,
      loadBps: 100e6,
      flows: 1000,
    },
    direct,
    tunnel,
  };
}

describe("report", () => {
  it("gives ratios, CPU per gigabit and added latency", () => {
    const table = renderTable(makeRun());
    expect(table).toMatch(/A→B \(Mbit\/s delivered\) \| 800\.0 .*\| 200\.0 .*\| 0\.25 \|/);
    // 0.8 CPU s over 200 Mbit/s × 2 s = 0.4 Gbit: 2 s per Gbit.
    expect(table).toMatch(/per Gbit delivered at that rate, A→B .*\| 2\.00 \|/);
    expect(table).toMatch(/at 200 Mbit\/s offered .*\| 2\.00 \/ – \|/);
    expect(table).toMatch(/p50, idle \(µs\) \| 100 \(0 lost\) \| 150 \(1 lost\) \| \+50 µs \|/);
    expect(table).toMatch(/B→A \(Mbit\/s delivered\) \| 400\.0 .*\| – \| – \|/);
    expect(table).toMatch(
      /flows: .*\| – \| 1250 flows\/s \(all 1000 in 800 ms; .*2300 datagrams sent; connections opened: client 1000, server 1000\) \|/,
    );
    expect(table).toMatch(/client RSS .*\| 64\.0 → 70\.0 \|/);
    expect(table).toMatch(/server RSS .*\| 60\.0 → \? \|/);
    // Runs without warm-up probes have no first-probe row.
    expect(table).not.toMatch(/first probe/);
  });

  it("shows a new peer's first probe apart when warm-up probes were left out", () => {
    const run = makeRun();
    run.tunnel.latencyIdle = { sent: 100, received: 99, p50Us: 150, p99Us: 900, firstUs: 20000 };
    run.direct.latencyIdle = { sent: 100, received: 100, p50Us: 100, p99Us: 700, firstUs: 3000 };
    expect(renderTable(run)).toMatch(/first probe, idle \(µs\) \| 3000 \| 20000 \| \+17000 µs \|/);
  });

  it("puts the added loaded echo p99 in the headline, every run", () => {
    const run = makeRun();
    expect(renderHeadline(run)).toContain("added echo p99 at 100 Mbit/s: not measured");
    run.direct.latencyLoaded = { sent: 100, received: 100, p50Us: 100, p99Us: 700 };
    run.tunnel.latencyLoaded = { sent: 100, received: 100, p50Us: 150, p99Us: 1100 };
    expect(renderHeadline(run)).toMatch(
      /A→B 0\.25, B→A –; added echo p99 at 100 Mbit\/s: \+400 µs \(target < 1000 µs\)\.\*\*$/,
    );
  });

  it("says in the headline what a ratio is worth when a path ran into iperf3's ceiling", () => {
    const run = makeRun();
    expect(renderHeadline(run)).toContain("A→B 0.25, B→A –;");
    run.direct.forward = { ...run.direct.forward!, end: "sender-limited" };
    expect(renderHeadline(run)).toContain("A→B 0.25 (direct sender-limited: at most this), B→A –;");
    run.tunnel.forward = { ...run.tunnel.forward!, end: "sender-limited" };
    expect(renderHeadline(run)).toContain("A→B 0.25 (both sender-limited: undecided), B→A –;");
    run.direct.forward = { ...run.direct.forward!, end: "bracketed" };
    expect(renderHeadline(run)).toContain(
      "A→B 0.25 (tunnel sender-limited: at least this), B→A –;",
    );
  });

  it("writes a dated run section with the headline, chart link and errors", () => {
    const text = renderRunSection(makeRun(), "bench-x.svg");
    expect(text.startsWith("### Run 2026-11-23T10:00:00.000Z — before\n")).toBe(true);
    expect(text).toContain("2 cores");
    expect(text).toContain("commit abc1234");
    expect(text).toContain("A→B 0.25, B→A –");
    expect(text).toContain("](bench-x.svg)");
    expect(text).toContain("- tunnel: not measured: `rate sweep B→A: server@S exited (1) / boom`");
    expect(text).toContain("- tunnel: not measured: `echo latency, idle: no echo`");
    expect(text).not.toContain("stdout");
  });

  it("keeps errors on one bounded line", () => {
    expect(oneLine("a\n  [p stderr] b\n  [p stdout] c")).toBe("a / b");
    expect(oneLine("x".repeat(1000)).length).toBeLessThanOrEqual(401);
  });

  it("with --keyed: a keyed vs unkeyed table, section and chart series", () => {
    const run = makeRun();
    expect(renderKeyedTable(run)).toBe("");
    expect(renderRunSection(run, null)).not.toContain("keyed");
    const keyed = emptyModeResult("keyed");
    keyed.forward = sweep("A→B", step(200, 190, 0.9), step(400, 300, 1));
    keyed.latencyIdle = { sent: 100, received: 100, p50Us: 160, p99Us: 950 };
    keyed.errors = ["rate sweep B→A: nope"];
    run.keyed = keyed;
    const table = renderKeyedTable(run);
    expect(table).toContain("| highest rate under 1 % loss, A→B (Mbit/s delivered) | 200.0");
    expect(table).toMatch(/190\.0 \(offered 200\.0, loss 5\.00 %\) \| 0\.95 \|/);
    expect(table).toContain("| echo RTT p50 / p99, idle (µs) | 150 / 900 | 160 / 950 | +10 µs |");
    const section = renderRunSection(run, null);
    expect(section).toContain("Keyed (`--key-file` on both ends) vs unkeyed:");
    expect(section).toContain("- keyed: not measured: `rate sweep B→A: nope`");
    expect(
      chartSeries(run)
        .map((x) => x.name)
        .slice(4),
    ).toEqual(["keyed A→B", "keyed B→A"]);
  });

  it("charts every step in Mbit/s, one series per path and direction", () => {
    const series = chartSeries(makeRun());
    expect(series.map((s) => s.name)).toEqual([
      "direct A→B",
      "direct B→A",
      "tunnel A→B",
      "tunnel B→A",
    ]);
    expect(series[0].points).toEqual([
      { x: 800, y: 800 },
      { x: 1600, y: 1200 },
    ]);
    expect(series[3].points).toEqual([]);
  });

  it("with default buffers and --udp-run variants: a buffers table with RcvbufErrors per step", () => {
    const run = makeRun();
    expect(renderBuffersTable(run)).toBe("");
    const errs = (st: MeasuredStep, receiver: number, tunnel: number | null): MeasuredStep => ({
      ...st,
      receiverRcvbufErrors: receiver,
      tunnelRcvbufErrors: tunnel,
    });
    run.direct.defaultBuffers = {
      forward: sweep(
        "A→B",
        errs(step(400, 400, null), 0, null),
        errs(step(800, 600, null), 900, null),
      ),
      reverse: null,
    };
    run.tunnel.defaultBuffers = {
      forward: sweep("A→B", errs(step(200, 200, 0.5), 3, 0), errs(step(400, 300, 1), 2000, 7)),
      reverse: null,
    };
    const variant = emptyModeResult("tunnel");
    variant.programArgs = ["--udp-run", "8"];
    variant.defaultBuffers = {
      forward: sweep("A→B", errs(step(400, 396, 1), 5, 0), errs(step(800, 500, 2), 4000, 0)),
      reverse: null,
    };
    variant.latencyLoaded = { sent: 100, received: 100, p50Us: 200, p99Us: 1500 };
    run.direct.latencyLoaded = { sent: 100, received: 100, p50Us: 100, p99Us: 1000 };
    variant.errors = ["rate sweep B→A: nope"];
    run.variants = [variant];
    const table = renderBuffersTable(run);
    expect(table.split("\n")[0]).toBe(
      "| Receiver buffers, direction | direct UDP | tunnel | tunnel --udp-run 8 | tunnel / tunnel --udp-run 8 vs direct |",
    );
    expect(table).toMatch(
      /\| default \(net\.core\.rmem_default\), A→B: highest rate .*\| 400\.0 .*\| 200\.0 .*\| 396\.0 .*\| 0\.50 \/ 0\.99 \|/,
    );
    expect(table).toContain(
      "| default (net.core.rmem_default), A→B: receiver RcvbufErrors per step (offered Mbit/s: datagrams) | 400: 0, 800: 900 | 200: 3, 400: 2000 (+7 in C/S) | 400: 5, 800: 4000 | – |",
    );
    expect(table).toContain("| 1000 | – (–) | 1500 (+500 µs) | – |");
    const section = renderRunSection(run, null);
    expect(section).toContain("Receiver socket buffers");
    expect(section).toContain("- tunnel --udp-run 8: not measured: `rate sweep B→A: nope`");
    expect(chartSeries(run).map((x) => x.name)).toContain("tunnel A→B, default buffers");
  });
});
