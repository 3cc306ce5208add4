/**
 * `pnpm bench --single-flow`: one UDP flow (one iperf3 stream, one UDP peer) through the
 * tunnel with `--queues 1`, `--queues 2 --flows 1` and `--queues 2 --flows 2` on both ends:
 * the highest rate under 1 % loss each way, the CPU of every thread of both programs during
 * that step (/proc/PID/task/TID/stat: the shards are worker threads), and the reorder depth of
 * sequence-numbered datagrams (what WireGuard's replay window must cover). Appends its own
 * section to docs/benchmarks.md.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ManagedProcess, type Rig } from "fake-tcp-e2e";
import { clockTicksPerSecond, parseProcStat } from "./proc-stat.js";
import { REPO_ROOT_DIR, Rig as RigClass } from "./rig-access.js";
import { RateSweep, type SweepConfig, type SweepEnd } from "./sweep.js";
import { DATAGRAM_BYTES, mbit } from "./throughput.js";

const SEQ_PROBE = join(dirname(fileURLToPath(import.meta.url)), "tools", "seq-probe.js");

/** One tunnel set-up measured. */
export interface SingleFlowConfig {
  readonly name: string;
  readonly clientArgs: string[];
  readonly serverArgs: string[];
}

export const SINGLE_FLOW_CONFIGS: readonly SingleFlowConfig[] = [
  { name: "--queues 1", clientArgs: ["--queues", "1"], serverArgs: ["--queues", "1"] },
  {
    name: "--queues 2 --flows 1",
    clientArgs: ["--queues", "2", "--flows", "1"],
    serverArgs: ["--queues", "2"],
  },
  {
    name: "--queues 2 --flows 2",
    clientArgs: ["--queues", "2", "--flows", "2", "--flow-rate", "0"],
    serverArgs: ["--queues", "2"],
  },
];

/** CPU seconds of one thread during a step. */
export interface ThreadCpu {
  program: "client" | "server";
  thread: string;
  seconds: number;
}

export interface DirectionResult {
  direction: "A→B" | "B→A";
  bestBps: number | null;
  lossPercent: number | null;
  stepSeconds: number | null;
  /** Threads of both programs during the best step, busiest first (those above 2 % of it). */
  threads: ThreadCpu[];
  /**
   * Why the sweep ended: "sender-limited" means iperf3 could not send more, so the rate is the
   * sender's ceiling, not the tunnel's.
   */
  end: SweepEnd;
}

export interface ReorderResult {
  rate: number;
  sent: number;
  received: number;
  outOfOrder: number;
  depth: number;
}

export interface SingleFlowResult {
  config: string;
  forward: DirectionResult | null;
  reverse: DirectionResult | null;
  reorder: ReorderResult[];
  errors: string[];
}

/** CPU ticks of every thread of `pid`, by "tid name". */
function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const t = parseProcStat(stat);
      out.set(`${tid} ${name}`, t.utime + t.stime);
    } catch {
      // The thread ended meanwhile.
    }
  }
  return out;
}

function threadDelta(
  program: "client" | "server",
  before: Map<string, number>,
  after: Map<string, number>,
  floorSeconds: number,
): ThreadCpu[] {
  const hz = clockTicksPerSecond();
  const out: ThreadCpu[] = [];
  for (const [thread, ticks] of after) {
    const seconds = (ticks - (before.get(thread) ?? 0)) / hz;
    if (seconds >= floorSeconds) out.push({ program, thread, seconds });
  }
  return out;
}

async function sweep(
  rig: Rig,
  reverse: boolean,
  config: SweepConfig,
  stepSeconds: number,
  log: (line: string) => void,
): Promise<DirectionResult> {
  const direction = reverse ? "B→A" : "A→B";
  const rs = new RateSweep(config);
  const client = rig.client!.pid;
  const server = rig.server!.pid;
  let best: DirectionResult = {
    direction,
    bestBps: null,
    lossPercent: null,
    stepSeconds: null,
    threads: [],
    end: "running",
  };
  for (let rate = rs.next(); rate !== null; rate = rs.next()) {
    const c0 = threadTicks(client);
    const s0 = threadTicks(server);
    const r = await rig.iperf({
      bitrate: rate,
      seconds: stepSeconds,
      length: DATAGRAM_BYTES,
      reverse,
    });
    const floor = r.seconds * 0.02;
    const threads = [
      ...threadDelta("client", c0, threadTicks(client), floor),
      ...threadDelta("server", s0, threadTicks(server), floor),
    ].sort((a, b) => b.seconds - a.seconds);
    const step = {
      offeredBps: rate,
      sentBps: r.sentBitsPerSecond,
      deliveredBps: r.receivedBitsPerSecond,
      lossPercent: r.lostPercent,
    };
    rs.record(step);
    log(
      `  ${direction} offered ${mbit(rate)} delivered ${mbit(step.deliveredBps)} Mbit/s, loss ${step.lossPercent.toFixed(2)} %; ` +
        threads.map((t) => `${t.program}:${t.thread} ${t.seconds.toFixed(2)} s`).join(", "),
    );
    if (rs.best === step) {
      best = {
        direction,
        bestBps: step.deliveredBps,
        lossPercent: step.lossPercent,
        stepSeconds: r.seconds,
        threads,
        end: "running",
      };
    }
  }
  best.end = rs.end;
  return best;
}

/** Sequence-numbered datagrams A→B at `rate` a second: how far they arrive out of order. */
async function reorder(rig: Rig, rate: number, count: number): Promise<ReorderResult> {
  await rig.stopApps();
  const recv = new ManagedProcess("seq-recv@B", rig.b, process.execPath, [
    SEQ_PROBE,
    "recv",
    "--port",
    String(rig.appPort),
    "--count",
    String(count),
    "--idle",
    "5000",
  ]);
  try {
    await recv.waitFor((l) => l.json?.event === "ready", 5_000);
    const target = rig.appTarget;
    const send = await rig.a.execAsync(
      process.execPath,
      [
        SEQ_PROBE,
        "send",
        "--target",
        `${target.host}:${target.port}`,
        "--count",
        String(count),
        "--rate",
        String(rate),
      ],
      60_000,
    );
    const sent = (JSON.parse(send.stdout.trim().split("\n").pop() ?? "{}") as { sent: number })
      .sent;
    const line = await recv.waitFor((l) => typeof l.json?.depth === "number", 15_000);
    const r = line.json as { received: number; outOfOrder: number; depth: number };
    return { rate, sent, received: r.received, outOfOrder: r.outOfOrder, depth: r.depth };
  } finally {
    await recv.stop(1_000);
  }
}

export interface SingleFlowPlan {
  sweep: SweepConfig;
  stepSeconds: number;
  /** Datagrams a second of the reorder probe, one run each (3 s worth of datagrams). */
  reorderRates: number[];
}

export const SINGLE_FLOW_PLAN: SingleFlowPlan = {
  sweep: {
    startBps: 200e6,
    maxBps: 6.4e9,
    minBps: 25e6,
    bisectSteps: 2,
    maxSteps: 8,
    retryFirstBad: true,
  },
  stepSeconds: 3,
  reorderRates: [5_000, 20_000],
};

export const SINGLE_FLOW_QUICK: SingleFlowPlan = {
  sweep: { startBps: 100e6, maxBps: 400e6, minBps: 25e6, bisectSteps: 1, maxSteps: 3 },
  stepSeconds: 1,
  reorderRates: [5_000],
};

/** Runs every configuration, one rig each. */
export async function measureSingleFlow(
  plan: SingleFlowPlan,
  log: (line: string) => void,
): Promise<SingleFlowResult[]> {
  const results: SingleFlowResult[] = [];
  for (const config of SINGLE_FLOW_CONFIGS) {
    const result: SingleFlowResult = {
      config: config.name,
      forward: null,
      reverse: null,
      reorder: [],
      errors: [],
    };
    let rig: Rig | null = null;
    try {
      log(`single flow, ${config.name}: building the rig`);
      rig = await RigClass.create({
        mode: "tunnel",
        clientArgs: config.clientArgs,
        serverArgs: config.serverArgs,
      });
      const r = rig;
      for (const reverse of [false, true]) {
        try {
          const d = await sweep(r, reverse, plan.sweep, plan.stepSeconds, log);
          if (reverse) result.reverse = d;
          else result.forward = d;
        } catch (err) {
          result.errors.push(`${reverse ? "B→A" : "A→B"}: ${String(err)}`);
        }
      }
      for (const rate of plan.reorderRates) {
        try {
          const measured = await reorder(r, rate, rate * 3);
          result.reorder.push(measured);
          log(`  reorder: ${JSON.stringify(measured)}`);
        } catch (err) {
          result.errors.push(`reorder at ${rate}/s: ${String(err)}`);
        }
      }
      const stats = await r.client?.requestStats().catch(() => null);
      if (stats) log(`  client flows: groups ${stats.flowGroups} joins ${stats.flowJoins}`);
    } catch (err) {
      result.errors.push(`rig: ${String(err)}`);
    } finally {
      await rig?.destroy();
    }
    results.push(result);
  }
  return results;
}

function threadsText(d: DirectionResult | null, program: "client" | "server"): string {
  if (!d || d.stepSeconds === null) return "-";
  const busy = d.threads.filter((t) => t.program === program);
  // CPU share of each busy thread over the step, e.g. "94 % / 61 % / 7 %".
  return busy.map((t) => `${Math.round((100 * t.seconds) / d.stepSeconds!)} %`).join(" / ") || "-";
}

/** The section for docs/benchmarks.md. */
export function renderSingleFlow(
  results: readonly SingleFlowResult[],
  meta: {
    startedAt: Date;
    loadStart: number;
    loadEnd: number;
    commit: string;
    cores: number;
    quick: boolean;
  },
): string {
  const lines = [
    `## Single UDP flow, ${meta.startedAt.toISOString().slice(0, 16)}Z${meta.quick ? " (quick)" : ""}`,
    "",
    `Command: \`pnpm bench --single-flow${meta.quick ? " --quick" : ""}\`. Commit ${meta.commit}, ${meta.cores} cores, ` +
      `load average ${meta.loadStart.toFixed(1)} at the start and ${meta.loadEnd.toFixed(1)} at the end (other work shares the machine).`,
    "One iperf3 UDP stream (1400 B, one UDP peer) through the NAT rig; highest rate under 1 % loss each way,",
    "and the CPU of each busy thread of the programs during that step (share of the step's time, busiest",
    "first; threads under 2 % left out: the shards are the worker threads). Reorder: sequence-numbered",
    "datagrams A→B; depth = furthest a datagram arrived behind the highest number before it.",
    '"Sender-limited": iperf3 could not send the next rate (one iperf3 thread, one socket), so the',
    "figure is the sender's ceiling and the set-ups compare by their threads' CPU, not by rate.",
    "",
    "| set-up (both ends) | A→B Mbit/s | client threads | server threads | B→A Mbit/s | client threads | server threads | reorder depth (out of order / received) |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of results) {
    const rate = (d: DirectionResult | null) =>
      d?.bestBps
        ? `${mbit(d.bestBps)}${d.end === "sender-limited" ? " (sender-limited)" : ""}`
        : "-";
    const ro =
      r.reorder
        .map((m) => `${m.depth} (${m.outOfOrder} / ${m.received} of ${m.sent} at ${m.rate}/s)`)
        .join("; ") || "-";
    lines.push(
      `| ${r.config} | ${rate(r.forward)} | ${threadsText(r.forward, "client")} | ${threadsText(r.forward, "server")} | ` +
        `${rate(r.reverse)} | ${threadsText(r.reverse, "client")} | ${threadsText(r.reverse, "server")} | ${ro} |`,
    );
  }
  const errors = results.flatMap((r) => r.errors.map((e) => `- ${r.config}: ${e}`));
  if (errors.length) lines.push("", "Errors:", "", ...errors);
  return `${lines.join("\n")}\n`;
}

/** The whole `--single-flow` run: measure, print, and (unless `noDocs`) append to benchmarks.md. */
export async function runSingleFlowBench(options: {
  quick: boolean;
  noDocs: boolean;
  docsDir: string | null;
  commit: string;
  log: (line: string) => void;
}): Promise<number> {
  const startedAt = new Date();
  const loadStart = loadavg()[0];
  const results = await measureSingleFlow(
    options.quick ? SINGLE_FLOW_QUICK : SINGLE_FLOW_PLAN,
    options.log,
  );
  const section = renderSingleFlow(results, {
    startedAt,
    loadStart,
    loadEnd: loadavg()[0],
    commit: options.commit,
    cores: availableParallelism(),
    quick: options.quick,
  });
  console.log(`\n${section}`);
  if (!options.noDocs) {
    const docs = options.docsDir ?? join(REPO_ROOT_DIR, "docs");
    mkdirSync(docs, { recursive: true });
    const path = join(docs, "benchmarks.md");
    const existing = existsSync(path) ? readFileSync(path, "utf8") : "# Benchmarks\n";
    writeFileSync(path, `${existing.replace(/\n*$/, "\n")}\n${section}`);
    options.log(`appended the single-flow section to ${path}`);
  }
  return results.some((r) => r.errors.length > 0) ? 1 : 0;
}
