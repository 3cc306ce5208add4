/**
 * One-way UDP flows through the rig (`tools/udp-flow.ts`): a sink on B that counts what
 * arrives and can stream back on request, and runs from A in either direction.
 */
import type { Namespace } from "./namespace.js";
import { toolPath } from "./paths.js";
import { ManagedProcess } from "./process.js";

export interface FlowRun {
  /** Run number (each run is counted separately by the sink). */
  run: number;
  count: number;
  intervalMs: number;
  size?: number;
  /** A's source port: the same port for every run keeps them on one tunnel connection. */
  bindPort?: number;
}

/**
 * Per run: datagrams the sink received, their distinct and highest sequence numbers, and the
 * datagrams it pushed back.
 */
export type SinkStats = Record<
  string,
  { received: number; distinct: number; highest: number; pushed: number }
>;

/** The sink on B: counts datagrams per run; streams back on a `down` run's request. */
export class FlowSink extends ManagedProcess {
  constructor(ns: Namespace, port: number) {
    super(`udp-flow-sink@${ns.role}:${port}`, ns, process.execPath, [
      toolPath("udp-flow"),
      "sink",
      "--port",
      String(port),
    ]);
  }

  static async start(ns: Namespace, port: number): Promise<FlowSink> {
    const sink = new FlowSink(ns, port);
    await sink.waitFor((l) => l.json?.msg === "ready", 10_000);
    return sink;
  }

  /** The sink's counters now (SIGUSR1). */
  async stats(): Promise<SinkStats> {
    const line = await this.requestStats(/^flow stats$/);
    return line.runs as SinkStats;
  }
}

function flowArgs(target: { host: string; port: number }, r: FlowRun): string[] {
  return [
    "--target",
    `${target.host}:${target.port}`,
    "--run",
    String(r.run),
    "--count",
    String(r.count),
    "--interval",
    String(r.intervalMs),
    "--size",
    String(r.size ?? 64),
    "--bind-port",
    String(r.bindPort ?? 0),
  ];
}

async function runJson<T>(ns: Namespace, args: string[], timeoutMs: number): Promise<T> {
  const res = await ns.execAsync(process.execPath, [toolPath("udp-flow"), ...args], timeoutMs);
  try {
    return JSON.parse(res.stdout) as T;
  } catch {
    throw new Error(`udp-flow ${args[0]} failed (exit ${res.code}): ${res.stderr}${res.stdout}`);
  }
}

/** Sends a run from `ns` to `target` (the sink counts it). */
export function flowUp(
  ns: Namespace,
  target: { host: string; port: number },
  r: FlowRun,
): Promise<{ sent: number }> {
  return runJson(ns, ["up", ...flowArgs(target, r)], r.count * r.intervalMs + 30_000);
}

/** Asks the sink behind `target` for a run and counts what arrives at `ns`. */
export function flowDown(
  ns: Namespace,
  target: { host: string; port: number },
  r: FlowRun & { waitMs?: number },
): Promise<{ received: number; distinct: number }> {
  const args = ["down", ...flowArgs(target, r), "--wait", String(r.waitMs ?? 3_000)];
  return runJson(ns, args, r.count * r.intervalMs + (r.waitMs ?? 3_000) + 30_000);
}
