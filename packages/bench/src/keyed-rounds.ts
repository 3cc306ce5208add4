/**
 * Keyed vs unkeyed tunnel (`pnpm bench --keyed`), in alternating rounds on one rig.
 *
 * Two rate sweeps one after the other cannot resolve a 5 % difference on a shared machine:
 * one busy spell during one step moves a sweep's maximum by far more. Here the programs are
 * restarted with and without `--key-file` in turns (U K K U U K K U: each mode goes first
 * equally often), and each round measures the same iperf3 steps; the comparison is of
 * medians. Two figures per direction: the CPU the tunnel programs spend per gigabit at a
 * fixed rate both modes carry without loss (on a CPU-bound host, capacity is its inverse),
 * and the rate delivered when the offered rate exceeds what the rig can carry.
 */

import { processCpuSeconds } from "./proc-stat.js";
import type { Rig } from "./rig-access.js";
import { DATAGRAM_BYTES } from "./throughput.js";

export interface KeyedRoundStep {
  keyed: boolean;
  round: number;
  direction: "A→B" | "B→A";
  offeredBps: number;
  deliveredBps: number;
  lossPercent: number;
  seconds: number;
  /** utime + stime of both tunnel programs across the step. */
  tunnelCpuSeconds: number;
}

export interface KeyedComparison {
  rounds: number;
  fixedBps: number;
  saturatingBps: number;
  stepSeconds: number;
  steps: KeyedRoundStep[];
  /** Steps that failed (no iperf3 result), "round n, mode direction rate: message". */
  errors: string[];
}

export interface KeyedRoundsPlan {
  /** Rounds per mode (even, so each mode goes first equally often). */
  rounds: number;
  fixedBps: number;
  saturatingBps: number;
  stepSeconds: number;
}

/** Which mode each round runs: U K K U U K K U ... for `rounds` rounds of each mode. */
export function roundOrder(rounds: number): boolean[] {
  const order: boolean[] = [];
  for (let pair = 0; pair < rounds; pair++) {
    order.push(...(pair % 2 === 0 ? [false, true] : [true, false]));
  }
  return order;
}

/**
 * Runs the rounds on a tunnel-mode rig. `restart(keyed)` must leave both programs running in
 * that mode; the first iperf3 step after each restart carries the connection set-up.
 */
export async function measureKeyedRounds(
  rig: Rig,
  plan: KeyedRoundsPlan,
  restart: (keyed: boolean) => Promise<void>,
  log: (line: string) => void,
): Promise<KeyedComparison> {
  const result: KeyedComparison = {
    rounds: plan.rounds,
    fixedBps: plan.fixedBps,
    saturatingBps: plan.saturatingBps,
    stepSeconds: plan.stepSeconds,
    steps: [],
    errors: [],
  };
  const order = roundOrder(plan.rounds);
  for (let round = 0; round < order.length; round++) {
    const keyed = order[round];
    await restart(keyed);
    // A short unmeasured step sets up the connection, so that no measured step includes it.
    await rig.iperf({ bitrate: 10e6, seconds: 1, length: DATAGRAM_BYTES }).catch(() => {});
    for (const offeredBps of [plan.fixedBps, plan.saturatingBps]) {
      for (const reverse of [false, true]) {
        const direction = reverse ? "B→A" : "A→B";
        const pids = [rig.client?.pid, rig.server?.pid].filter((p): p is number => p !== undefined);
        const cpu = () => pids.reduce((s, pid) => s + processCpuSeconds(pid), 0);
        try {
          const before = cpu();
          const r = await rig.iperf({
            bitrate: offeredBps,
            seconds: plan.stepSeconds,
            length: DATAGRAM_BYTES,
            reverse,
          });
          const step: KeyedRoundStep = {
            keyed,
            round,
            direction,
            offeredBps,
            deliveredBps: r.receivedBitsPerSecond,
            lossPercent: r.lostPercent,
            seconds: r.seconds,
            tunnelCpuSeconds: cpu() - before,
          };
          result.steps.push(step);
          log(
            `  round ${round + 1}/${order.length} ${keyed ? "keyed  " : "unkeyed"} ${direction} ` +
              `offered ${(offeredBps / 1e6).toFixed(0)} delivered ${(step.deliveredBps / 1e6).toFixed(1)} Mbit/s, ` +
              `loss ${step.lossPercent.toFixed(2)} %, tunnel CPU ${step.tunnelCpuSeconds.toFixed(2)} s`,
          );
        } catch (err) {
          const text = err instanceof Error ? err.message : String(err);
          result.errors.push(
            `round ${round + 1}, ${keyed ? "keyed" : "unkeyed"} ${direction} ${offeredBps / 1e6} Mbit/s: ${text}`,
          );
        }
      }
    }
  }
  return result;
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** CPU seconds per gigabit delivered in a step (null when nothing was delivered). */
export function roundCpuPerGigabit(step: KeyedRoundStep): number | null {
  const gigabits = (step.deliveredBps * step.seconds) / 1e9;
  return gigabits > 0 ? step.tunnelCpuSeconds / gigabits : null;
}

/** Medians of one mode, direction and offered rate. */
export function keyedMedians(
  cmp: KeyedComparison,
  keyed: boolean,
  direction: "A→B" | "B→A",
  offeredBps: number,
): { deliveredBps: number | null; cpuPerGbit: number | null; samples: number } {
  const steps = cmp.steps.filter(
    (s) => s.keyed === keyed && s.direction === direction && s.offeredBps === offeredBps,
  );
  const cpu = steps.map(roundCpuPerGigabit).filter((x): x is number => x !== null);
  return {
    deliveredBps: median(steps.map((s) => s.deliveredBps)),
    cpuPerGbit: median(cpu),
    samples: steps.length,
  };
}

function ratio(keyed: number | null, unkeyed: number | null): string {
  return keyed === null || unkeyed === null || unkeyed === 0 ? "–" : (keyed / unkeyed).toFixed(3);
}

function num(x: number | null, digits: number, scale = 1): string {
  return x === null ? "–" : (x / scale).toFixed(digits);
}

/** The comparison as a Markdown table (medians over the rounds; keyed/unkeyed ratios). */
export function renderKeyedRounds(cmp: KeyedComparison): string {
  const fixed = `${cmp.fixedBps / 1e6} Mbit/s`;
  const sat = `${cmp.saturatingBps / 1e6} Mbit/s`;
  const rows: string[][] = [
    [
      "Median over the rounds",
      `unkeyed (${cmp.rounds} rounds)`,
      `keyed (${cmp.rounds} rounds)`,
      "keyed / unkeyed",
    ],
  ];
  for (const direction of ["A→B", "B→A"] as const) {
    const u = keyedMedians(cmp, false, direction, cmp.fixedBps);
    const k = keyedMedians(cmp, true, direction, cmp.fixedBps);
    rows.push([
      `tunnel CPU s per Gbit at ${fixed}, ${direction} (client + server)`,
      num(u.cpuPerGbit, 3),
      num(k.cpuPerGbit, 3),
      ratio(k.cpuPerGbit, u.cpuPerGbit),
    ]);
    rows.push([
      `delivered at ${fixed} offered, ${direction} (Mbit/s)`,
      num(u.deliveredBps, 1, 1e6),
      num(k.deliveredBps, 1, 1e6),
      ratio(k.deliveredBps, u.deliveredBps),
    ]);
    const us = keyedMedians(cmp, false, direction, cmp.saturatingBps);
    const ks = keyedMedians(cmp, true, direction, cmp.saturatingBps);
    rows.push([
      `delivered at ${sat} offered (saturating), ${direction} (Mbit/s)`,
      num(us.deliveredBps, 1, 1e6),
      num(ks.deliveredBps, 1, 1e6),
      ratio(ks.deliveredBps, us.deliveredBps),
    ]);
  }
  const lines = rows.map((r) => `| ${r.join(" | ")} |`);
  lines.splice(1, 0, "|---|---|---|---|");
  if (cmp.errors.length) lines.push("", ...cmp.errors.map((e) => `- not measured: \`${e}\``));
  return lines.join("\n");
}
