/**
 * Throughput sweeps: iperf3 UDP (1400-byte datagrams) through a rig, one direction at a time,
 * with the tunnel programs' CPU time sampled around every step.
 */
import type { Rig } from "fake-tcp-e2e";
import { processCpuSeconds } from "./proc-stat.js";
import { RateSweep, type SweepConfig, type SweepEnd, type SweepStep } from "./sweep.js";

/** iperf3 UDP payload size (-l). */
export const DATAGRAM_BYTES = 1400;

/** A sweep step plus the CPU the tunnel programs used during it (tunnel mode only). */
export interface MeasuredStep extends SweepStep {
  seconds: number;
  /** CPU seconds of client + server during the step, null when no tunnel runs. */
  tunnelCpuSeconds: number | null;
  /**
   * Datagrams the receiving application's socket dropped for a full buffer during the step
   * (`RcvbufErrors` of /proc/net/snmp in B for A→B, in A for B→A); absent in old runs.
   */
  receiverRcvbufErrors?: number;
  /** The same in the tunnel programs' namespaces (C + S), null on the direct path. */
  tunnelRcvbufErrors?: number | null;
}

export interface SweepResult {
  direction: "A→B" | "B→A";
  /** iperf3's socket buffers (-w) in bytes; 0: the kernel's defaults. Absent in old runs. */
  socketBuffer?: number;
  steps: MeasuredStep[];
  best: MeasuredStep | null;
  /** Why the sweep ended ("time-budget": it ran out of its time before the sweep did). */
  end: SweepEnd | "time-budget";
  /** iperf3 runs that failed (no result) and were repeated. */
  failedRuns: number;
}

/** Pause before repeating a failed iperf3 run (lets queues from the last step drain). */
const RETRY_PAUSE_MS = 2_000;

/** iperf3's socket buffers asked for by default (-w): 4 MiB (see `IperfUdpOptions`). */
export const LARGE_SOCKET_BUFFER = 4 * 1024 * 1024;

/** `RcvbufErrors` of the namespaces with the given roles, summed (from `Rig.udpCounters`). */
function rcvbufErrors(counters: Record<string, Record<string, number>>, roles: string[]): number {
  return roles.reduce((sum, role) => sum + (counters[role]?.RcvbufErrors ?? 0), 0);
}

/** Sum of the CPU seconds of the given processes (a vanished process counts as an error). */
function cpuOf(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0);
}

/**
 * Runs the bounded sweep in one direction. `cpuPids` are the tunnel programs (empty for the
 * direct path). No step starts after `budgetMs` (hung iperf3 runs cost ~24 s each, so the
 * step cap alone does not bound the time). `log` reports each step as it is measured.
 * `socketBuffer`: iperf3's socket buffers at both ends (0: the kernel's defaults; default
 * {@link LARGE_SOCKET_BUFFER}, within net.core.rmem_max).
 */
export async function sweepDirection(
  rig: Rig,
  reverse: boolean,
  config: SweepConfig,
  stepSeconds: number,
  budgetMs: number,
  cpuPids: readonly number[],
  log: (line: string) => void,
  socketBuffer?: number,
): Promise<SweepResult> {
  const deadline = Date.now() + budgetMs;
  let outOfTime = false;
  const sweep = new RateSweep(config);
  const steps: MeasuredStep[] = [];
  const direction = reverse ? "B→A" : "A→B";
  let failedRuns = 0;
  for (let rate = sweep.next(); rate !== null; rate = sweep.next()) {
    if (Date.now() >= deadline) {
      outOfTime = true;
      log(`  ${rig.mode} ${direction}: sweep time budget spent; stopping before ${mbit(rate)}`);
      break;
    }
    let cpuBefore = cpuPids.length ? cpuOf(cpuPids) : 0;
    let countersBefore = rig.udpCounters();
    const options = {
      bitrate: rate,
      seconds: stepSeconds,
      length: DATAGRAM_BYTES,
      reverse,
      socketBuffer,
    };
    let r: Awaited<ReturnType<Rig["iperf"]>>;
    try {
      r = await rig.iperf(options);
    } catch (err) {
      // iperf3 waits without end when its first UDP datagram is lost (e.g. while a tunnel
      // flow is being set up behind a congested queue): repeat the run once.
      failedRuns++;
      log(`  ${rig.mode} ${direction} offered ${mbit(rate)}: ${String(err)}; repeating once`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
      cpuBefore = cpuPids.length ? cpuOf(cpuPids) : 0;
      countersBefore = rig.udpCounters();
      r = await rig.iperf(options);
    }
    const cpu = cpuPids.length ? cpuOf(cpuPids) - cpuBefore : null;
    const countersAfter = rig.udpCounters();
    const receiver = [reverse ? "A" : "B"];
    const tunnelRoles = rig.mode === "tunnel" ? ["C", "S"] : [];
    const step: MeasuredStep = {
      offeredBps: rate,
      sentBps: r.sentBitsPerSecond,
      deliveredBps: r.receivedBitsPerSecond,
      lossPercent: r.lostPercent,
      seconds: r.seconds,
      tunnelCpuSeconds: cpu,
      receiverRcvbufErrors:
        rcvbufErrors(countersAfter, receiver) - rcvbufErrors(countersBefore, receiver),
      tunnelRcvbufErrors: tunnelRoles.length
        ? rcvbufErrors(countersAfter, tunnelRoles) - rcvbufErrors(countersBefore, tunnelRoles)
        : null,
    };
    steps.push(step);
    sweep.record(step);
    log(
      `  ${rig.mode} ${direction} offered ${mbit(rate)} sent ${mbit(step.sentBps)} delivered ` +
        `${mbit(step.deliveredBps)} Mbit/s, loss ${step.lossPercent.toFixed(2)} %, ` +
        `receiver RcvbufErrors ${step.receiverRcvbufErrors}` +
        (cpu === null ? "" : `, tunnel CPU ${cpu.toFixed(2)} s`),
    );
  }
  const best = sweep.best ? (steps.find((s) => s === sweep.best) ?? null) : null;
  return {
    direction,
    socketBuffer: socketBuffer ?? LARGE_SOCKET_BUFFER,
    steps,
    best,
    end: outOfTime ? "time-budget" : sweep.end,
    failedRuns,
  };
}

/**
 * CPU seconds of the tunnel programs per gigabit delivered in a step (delivered bits =
 * receiver rate × duration), or null without a CPU sample or delivery.
 */
export function cpuPerGigabit(step: MeasuredStep | null): number | null {
  if (!step || step.tunnelCpuSeconds === null) return null;
  const gigabits = (step.deliveredBps * step.seconds) / 1e9;
  return gigabits > 0 ? step.tunnelCpuSeconds / gigabits : null;
}

/** Bits per second as Mbit/s text. */
export function mbit(bps: number): string {
  return (bps / 1e6).toFixed(bps >= 1e9 ? 0 : 1);
}
