/**
 * `pnpm bench --latency-only`: only the echo round trips of `pnpm bench` (idle, and under
 * 100 Mbit/s of iperf3 load), direct and through the tunnel on fresh rigs, in alternating
 * rounds so that a noisy shared machine weighs on both paths alike. Prints each round and the
 * medians over the rounds; leaves docs/ alone (a quick check while working on latency).
 */
import { loadavg } from "node:os";
import { type LatencyResult, measureLatency, startProbeEcho } from "./latency.js";
import type { PathMode } from "./results.js";
import { Rig } from "./rig-access.js";
import { DATAGRAM_BYTES } from "./throughput.js";

export interface LatencyOnlyPlan {
  rounds: number;
  probes: number;
  probeIntervalMs: number;
  /** Probes sent first and left out (a new peer's first datagram waits for the handshake). */
  warmupProbes: number;
  loadBps: number;
  /**
   * Seconds of load before measuring: the full bench measures latency after its rate sweeps,
   * when the programs' hot code is compiled; fresh programs would run it unoptimized.
   */
  warmupSeconds: number;
}

export const LATENCY_ONLY_PLAN: Omit<LatencyOnlyPlan, "rounds"> = {
  probes: 1000,
  probeIntervalMs: 5,
  warmupProbes: 20,
  loadBps: 100e6,
  warmupSeconds: 3,
};

export interface LatencyRound {
  round: number;
  mode: PathMode;
  idle: LatencyResult | null;
  loaded: LatencyResult | null;
  error?: string;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function measureRound(
  round: number,
  mode: "direct" | "tunnel",
  plan: LatencyOnlyPlan,
): Promise<LatencyRound> {
  const result: LatencyRound = { round, mode, idle: null, loaded: null };
  let rig: Rig | null = null;
  try {
    const r = await Rig.create({ mode });
    rig = r;
    await startProbeEcho(r);
    await r.iperf({ bitrate: plan.loadBps, seconds: plan.warmupSeconds, length: DATAGRAM_BYTES });
    const probe = () => measureLatency(r, plan.probes, plan.probeIntervalMs, plan.warmupProbes);
    result.idle = await probe();
    const probeSeconds = ((plan.probes + plan.warmupProbes) * plan.probeIntervalMs) / 1000;
    const [, loaded] = await Promise.all([
      r.iperf({
        bitrate: plan.loadBps,
        seconds: Math.ceil(probeSeconds) + 3,
        length: DATAGRAM_BYTES,
      }),
      sleep(1000).then(probe),
    ]);
    result.loaded = loaded;
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
  } finally {
    await rig?.destroy();
  }
  return result;
}

function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

const us = (v: number | undefined) =>
  v === undefined || Number.isNaN(v) ? "-" : `${Math.round(v)}`;

/** The rounds as a Markdown table, then the medians per path and what the tunnel adds. */
export function renderLatencyRounds(rounds: readonly LatencyRound[], loadMbps: number): string {
  const lines = [
    `| round | path | idle p50 | idle p99 | ${loadMbps} Mbit/s p50 | ${loadMbps} Mbit/s p99 | first probe |`,
    "|---|---|---|---|---|---|---|",
  ];
  for (const r of rounds) {
    lines.push(
      `| ${r.round} | ${r.mode} | ${us(r.idle?.p50Us)} | ${us(r.idle?.p99Us)} | ${us(r.loaded?.p50Us)} | ${us(r.loaded?.p99Us)} | ${us(r.idle?.firstUs)} |${r.error ? ` error: ${r.error}` : ""}`,
    );
  }
  const pick = (mode: PathMode, f: (r: LatencyRound) => number | undefined) =>
    median(
      rounds
        .filter((r) => r.mode === mode)
        .map(f)
        .filter((v): v is number => v !== undefined),
    );
  const fields: Array<(r: LatencyRound) => number | undefined> = [
    (r) => r.idle?.p50Us,
    (r) => r.idle?.p99Us,
    (r) => r.loaded?.p50Us,
    (r) => r.loaded?.p99Us,
    (r) => r.idle?.firstUs,
  ];
  const direct = fields.map((f) => pick("direct", f));
  const tunnel = fields.map((f) => pick("tunnel", f));
  lines.push(`| median | direct | ${direct.map(us).join(" | ")} |`);
  lines.push(`| median | tunnel | ${tunnel.map(us).join(" | ")} |`);
  lines.push(`| median | added | ${tunnel.map((t, i) => us(t - direct[i])).join(" | ")} |`);
  return lines.join("\n");
}

/** Runs the rounds (direct first in odd rounds, the tunnel first in even ones). */
export async function runLatencyOnly(
  plan: LatencyOnlyPlan,
  commit: string,
  log: (line: string) => void,
): Promise<number> {
  const loadStart = loadavg()[0];
  const rounds: LatencyRound[] = [];
  for (let round = 1; round <= plan.rounds; round++) {
    const order: Array<"direct" | "tunnel"> =
      round % 2 ? ["direct", "tunnel"] : ["tunnel", "direct"];
    for (const mode of order) {
      log(`latency round ${round}/${plan.rounds}: ${mode}`);
      const r = await measureRound(round, mode, plan);
      if (r.error) log(`latency round ${round}: ${mode} FAILED: ${r.error}`);
      rounds.push(r);
    }
  }
  console.log(
    `\nEcho RTT (µs), ${plan.probes} probes every ${plan.probeIntervalMs} ms after ${plan.warmupProbes} warm-up probes; commit ${commit}; load average ${loadStart.toFixed(2)} at start, ${loadavg()[0].toFixed(2)} at end\n`,
  );
  console.log(`${renderLatencyRounds(rounds, plan.loadBps / 1e6)}\n`);
  return rounds.some((r) => r.error) ? 1 : 0;
}
