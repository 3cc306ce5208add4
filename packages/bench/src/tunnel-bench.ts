/**
 * `pnpm bench`: direct UDP vs the fake-TCP tunnel on the e2e namespace NAT rig, in one run.
 * Measures the highest iperf3 UDP rate under 1 % loss each way, the tunnel's CPU per gigabit,
 * echo latency idle and under load, and 1,000-flow set-up; prints a table, appends it to
 * docs/benchmarks.md and draws docs/bench-<date>-<label>.svg. Must run as root.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseBenchArgs, USAGE } from "./cli-options.js";
import { renderConnectionsSection } from "./connection-figures.js";
import { measureConnections, writeConnectionsDocs } from "./connections.js";
import { appendRun } from "./docs-file.js";
import { type KeyedComparison, measureKeyedRounds, renderKeyedRounds } from "./keyed-rounds.js";
import { measureLatency, startProbeEcho } from "./latency.js";
import { LATENCY_ONLY_PLAN, runLatencyOnly } from "./latency-only.js";
import {
  chartSeries,
  renderBuffersTable,
  renderErrors,
  renderHeadline,
  renderKeyedTable,
  renderRunSection,
  renderTable,
} from "./report.js";
import { type BenchRun, emptyModeResult, type ModeResult, type PathMode } from "./results.js";
import { destroyAllNamespaces, REPO_ROOT_DIR, Rig, SERVER_MAIN } from "./rig-access.js";
import { measureScale } from "./scale.js";
import { runSingleFlowBench } from "./single-flow.js";
import { renderRateChart } from "./svg-chart.js";
import type { SweepConfig } from "./sweep.js";
import { DATAGRAM_BYTES, type SweepResult, sweepDirection } from "./throughput.js";

/** Durations and sizes of a run. */
interface Plan {
  sweep: SweepConfig;
  stepSeconds: number;
  /** No sweep step starts after this long (per sweep). */
  sweepBudgetMs: number;
  probes: number;
  probeIntervalMs: number;
  /** Probes sent first and left out of the figures (see latency-probe.ts). */
  warmupProbes: number;
  loadBps: number;
  flows: number;
  retryMs: number;
  flowDeadlineMs: number;
  watchdogMs: number;
  /** Keyed vs unkeyed alternating rounds (`--keyed`). */
  keyedRounds: { rounds: number; fixedBps: number; saturatingBps: number; stepSeconds: number };
}

const FULL: Plan = {
  sweep: {
    startBps: 100e6,
    maxBps: 6.4e9,
    minBps: 10e6,
    bisectSteps: 3,
    maxSteps: 11,
    retryFirstBad: true,
  },
  stepSeconds: 4,
  sweepBudgetMs: 120_000,
  probes: 1000,
  probeIntervalMs: 5,
  warmupProbes: 20,
  loadBps: 100e6,
  flows: 1000,
  retryMs: 250,
  flowDeadlineMs: 15_000,
  watchdogMs: 14 * 60_000,
  keyedRounds: { rounds: 4, fixedBps: 300e6, saturatingBps: 2e9, stepSeconds: 4 },
};

const QUICK: Plan = {
  sweep: { startBps: 100e6, maxBps: 400e6, minBps: 25e6, bisectSteps: 1, maxSteps: 3 },
  stepSeconds: 1,
  sweepBudgetMs: 40_000,
  probes: 200,
  probeIntervalMs: 5,
  warmupProbes: 20,
  loadBps: 100e6,
  flows: 100,
  retryMs: 250,
  flowDeadlineMs: 15_000,
  watchdogMs: 4 * 60_000,
  keyedRounds: { rounds: 1, fixedBps: 100e6, saturatingBps: 400e6, stepSeconds: 1 },
};

function log(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What else a path measures: sweeps with default buffers; extra program arguments. */
interface PathExtras {
  defaultBuffers: boolean;
  /** Arguments for both tunnel programs (a variant: no flows phase). */
  programArgs?: string[];
}

/**
 * Runs every measurement on one path. A failing phase is recorded and the next one still
 * runs (a broken direction must not hide the latency figures); only a rig that cannot be
 * built ends the path.
 */
async function measurePath(
  mode: PathMode,
  plan: Plan,
  extras: PathExtras,
  keyFile?: string,
): Promise<ModeResult> {
  const result = emptyModeResult(mode);
  const programArgs = extras.programArgs ?? [];
  if (programArgs.length) result.programArgs = programArgs;
  const errors = result.errors;
  const phase = async (name: string, fn: () => Promise<void>): Promise<void> => {
    log(`${mode}: ${name}`);
    try {
      await fn();
    } catch (err) {
      errors.push(`${name}: ${errorText(err)}`);
      log(`${mode}: ${name} FAILED: ${errorText(err)}`);
    }
  };
  let rig: Rig | null = null;
  try {
    log(`${mode}: building the rig`);
    // The keyed path is the tunnel with a key on both ends: the same data path after the
    // handshake, so its figures should match the unkeyed tunnel's.
    const keyArgs = [
      ...(mode === "keyed" && keyFile ? ["--key-file", keyFile] : []),
      ...programArgs,
    ];
    const r = await Rig.create({
      mode: mode === "direct" ? "direct" : "tunnel",
      clientArgs: keyArgs,
      serverArgs: keyArgs,
    });
    rig = r;
    const cpuPids = mode !== "direct" && r.client && r.server ? [r.client.pid, r.server.pid] : [];
    await phase("rate sweep A→B", async () => {
      result.forward = await sweepDirection(
        r,
        false,
        plan.sweep,
        plan.stepSeconds,
        plan.sweepBudgetMs,
        cpuPids,
        log,
      );
    });
    await phase("rate sweep B→A", async () => {
      result.reverse = await sweepDirection(
        r,
        true,
        plan.sweep,
        plan.stepSeconds,
        plan.sweepBudgetMs,
        cpuPids,
        log,
      );
    });
    if (extras.defaultBuffers) {
      const small: { forward: SweepResult | null; reverse: SweepResult | null } = {
        forward: null,
        reverse: null,
      };
      result.defaultBuffers = small;
      for (const reverse of [false, true]) {
        await phase(`rate sweep ${reverse ? "B→A" : "A→B"}, default socket buffers`, async () => {
          small[reverse ? "reverse" : "forward"] = await sweepDirection(
            r,
            reverse,
            plan.sweep,
            plan.stepSeconds,
            plan.sweepBudgetMs,
            cpuPids,
            log,
            0,
          );
        });
      }
    }
    await phase("echo latency, idle", async () => {
      await startProbeEcho(r);
      result.latencyIdle = await measureLatency(
        r,
        plan.probes,
        plan.probeIntervalMs,
        plan.warmupProbes,
      );
    });
    if (mode === "keyed") return result;
    await phase(`echo latency under ${plan.loadBps / 1e6} Mbit/s iperf3 load`, async () => {
      const loadSeconds =
        Math.ceil(((plan.probes + plan.warmupProbes) * plan.probeIntervalMs) / 1000) + 3;
      const [, loaded] = await Promise.all([
        r.iperf({ bitrate: plan.loadBps, seconds: loadSeconds, length: DATAGRAM_BYTES }),
        sleep(1000).then(() =>
          measureLatency(r, plan.probes, plan.probeIntervalMs, plan.warmupProbes),
        ),
      ]);
      result.latencyLoaded = loaded;
    });
    if (programArgs.length) return result;
    await phase(`${plan.flows} concurrent flows`, async () => {
      if (mode === "tunnel") {
        // Fresh programs, so "RSS before" is an idle program, not one that just ran sweeps.
        await r.client?.stop(3_000);
        await r.server?.stop(3_000);
        await r.startTunnel();
      }
      result.scale = await measureScale(r, plan.flows, plan.retryMs, plan.flowDeadlineMs);
    });
  } catch (err) {
    errors.push(`rig: ${errorText(err)}`);
    log(`${mode}: FAILED: ${errorText(err)}`);
  } finally {
    await rig?.destroy();
  }
  return result;
}

/** Runs `fn` with a key made by the server program's `genkey` in a private temp dir. */
async function withKeyFile<T>(fn: (keyFile: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "bench-key-"));
  try {
    const keyFile = join(dir, "tunnel.key");
    writeFileSync(keyFile, execFileSync(process.execPath, [SERVER_MAIN, "genkey"]), {
      mode: 0o600,
    });
    return await fn(keyFile);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Keyed and unkeyed programs in alternating rounds on one rig (see keyed-rounds.ts). */
async function compareKeyed(plan: Plan, keyFile: string): Promise<KeyedComparison> {
  log("keyed vs unkeyed: building the rig");
  const rig = await Rig.create({ mode: "tunnel", startTunnel: false });
  try {
    return await measureKeyedRounds(
      rig,
      plan.keyedRounds,
      async (keyed) => {
        await rig.client?.stop(3_000);
        await rig.server?.stop(3_000);
        const args = keyed ? ["--key-file", keyFile] : [];
        await rig.startServer(args);
        await rig.startClient(args);
      },
      log,
    );
  } finally {
    await rig.destroy();
  }
}

function gitCommit(): string {
  try {
    const hash = execFileSync("git", ["-C", REPO_ROOT_DIR, "rev-parse", "--short", "HEAD"], {
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync(
      "git",
      ["-C", REPO_ROOT_DIR, "status", "--porcelain", "--untracked-files=no", "packages"],
      { encoding: "utf8" },
    ).trim();
    return dirty ? `${hash} (with uncommitted changes under packages/)` : hash;
  } catch {
    return "unknown";
  }
}

/** Writes the chart and appends the run to docs/benchmarks.md; returns the chart's path. */
function writeDocs(run: BenchRun, docsDir: string | null): string {
  const docs = docsDir ?? join(REPO_ROOT_DIR, "docs");
  mkdirSync(docs, { recursive: true });
  const stamp = run.startedAt.toISOString().slice(0, 16).replace(/:/g, "");
  const safeLabel = run.label.replace(/[^\w.-]+/g, "_");
  const chartName = `bench-${stamp}Z-${safeLabel}${run.quick ? "-quick" : ""}.svg`;
  const title = `Delivered vs offered (iperf3 UDP, 1400 B): ${run.label}, ${run.startedAt.toISOString().slice(0, 16)}Z`;
  writeFileSync(join(docs, chartName), renderRateChart(title, chartSeries(run)));
  // Every step's raw figures, for comparing runs later (the table shows only the best ones).
  writeFileSync(
    join(docs, chartName.replace(/\.svg$/, ".json")),
    `${JSON.stringify(run, null, 1)}\n`,
  );
  const mdPath = join(docs, "benchmarks.md");
  const existing = existsSync(mdPath) ? readFileSync(mdPath, "utf8") : null;
  writeFileSync(mdPath, appendRun(existing, renderRunSection(run, chartName)));
  return join(docs, chartName);
}

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseBenchArgs>;
  try {
    opts = parseBenchArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`${errorText(err)}\n${USAGE}`);
    return 2;
  }
  if (opts.help) {
    console.log(USAGE);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    console.error("pnpm bench needs root (it creates network namespaces)");
    return 2;
  }
  if (opts.connections !== null) return runConnections(opts.connections, opts);
  if (opts.latencyRounds !== null) {
    return runLatencyOnly({ ...LATENCY_ONLY_PLAN, rounds: opts.latencyRounds }, gitCommit(), log);
  }
  const plan = opts.quick ? QUICK : FULL;
  // BENCH_WATCHDOG_MS shortens the watchdog (to check that it tears down).
  // Each extra pair of sweeps (default buffers, per path) and each variant path adds time.
  const extraSweepPairs =
    (opts.defaultBuffers ? 2 : 0) + opts.udpRuns.length * (opts.defaultBuffers ? 2 : 1);
  const watchdogMs =
    Number(process.env.BENCH_WATCHDOG_MS) ||
    plan.watchdogMs + extraSweepPairs * 2 * plan.sweepBudgetMs + opts.udpRuns.length * 60_000;
  const watchdog = setTimeout(() => {
    log(`watchdog: the run exceeded ${watchdogMs / 1000} s; tearing everything down`);
    destroyAllNamespaces();
    process.exit(3);
  }, watchdogMs);
  if (opts.singleFlow) {
    const code = await runSingleFlowBench({ ...opts, commit: gitCommit(), log });
    clearTimeout(watchdog);
    return code;
  }
  const startedAt = new Date();
  const t0 = performance.now();
  const loadAverage = loadavg()[0];
  const extras: PathExtras = { defaultBuffers: opts.defaultBuffers };
  const direct = await measurePath("direct", plan, extras);
  const tunnel = await measurePath("tunnel", plan, extras);
  const variants: ModeResult[] = [];
  for (const n of opts.udpRuns) {
    variants.push(
      await measurePath("tunnel", plan, { ...extras, programArgs: ["--udp-run", String(n)] }),
    );
  }
  // Keyed: 4 MiB sweeps only (its data path is the unkeyed one after the handshake).
  const keyedRuns = opts.keyed
    ? await withKeyFile(async (keyFile) => ({
        sweeps: await measurePath("keyed", plan, { defaultBuffers: false }, keyFile),
        rounds: await compareKeyed(plan, keyFile),
      }))
    : undefined;
  const keyed = keyedRuns?.sweeps;
  clearTimeout(watchdog);
  const run: BenchRun = {
    label: opts.label,
    quick: opts.quick,
    startedAt,
    durationSeconds: (performance.now() - t0) / 1000,
    cores: availableParallelism(),
    nodeVersion: process.version,
    commit: gitCommit(),
    loadAverage,
    loadAverageEnd: loadavg()[0],
    settings: {
      startBps: plan.sweep.startBps,
      stepSeconds: plan.stepSeconds,
      probes: plan.probes,
      probeIntervalMs: plan.probeIntervalMs,
      warmupProbes: plan.warmupProbes,
      loadBps: plan.loadBps,
      flows: plan.flows,
    },
    direct,
    tunnel,
    ...(keyed ? { keyed } : {}),
    ...(variants.length ? { variants } : {}),
    ...(keyedRuns ? { keyedRounds: keyedRuns.rounds } : {}),
  };
  console.log(`\n${renderHeadline(run)}\n\n${renderTable(run)}\n`);
  if (run.keyed) console.log(`Keyed vs unkeyed:\n\n${renderKeyedTable(run)}\n`);
  if (run.keyedRounds) console.log(`${renderKeyedRounds(run.keyedRounds)}\n`);
  const buffers = renderBuffersTable(run);
  if (buffers) console.log(`Receiver socket buffers:\n\n${buffers}\n`);
  const errors = renderErrors(run);
  if (errors) console.log(`${errors}\n`);
  if (!opts.noDocs) {
    const chart = writeDocs(run, opts.docsDir);
    log(`appended the run to benchmarks.md; chart ${chart}`);
  }
  log(`done in ${Math.round(run.durationSeconds)} s`);
  // The table and docs keep what was measured; the exit status says something was not.
  const failed = [direct, tunnel, ...variants, ...(keyed ? [keyed] : [])].some(
    (m) => m.errors.length > 0,
  );
  return failed || (keyedRuns?.rounds.errors.length ?? 0) > 0 ? 1 : 0;
}

/** `--connections N`: only the many-connection measurement (see connections.ts). */
async function runConnections(
  connections: number,
  opts: ReturnType<typeof parseBenchArgs>,
): Promise<number> {
  const watchdog = setTimeout(() => {
    log("watchdog: the run exceeded 15 minutes; tearing everything down");
    destroyAllNamespaces();
    process.exit(3);
  }, 15 * 60_000);
  const run = await measureConnections(
    {
      connections,
      pace: opts.pace,
      label: opts.label,
      loadFlows: [1, 1000],
      loadMbps: [200, 400, 800],
      loadSeconds: 3,
      retryMs: 1000,
      // Paced: time to offer them all, and as long again for stragglers.
      setupDeadlineMs: Math.max(120_000, opts.pace > 0 ? (2 * connections * 1000) / opts.pace : 0),
    },
    log,
    gitCommit(),
  );
  clearTimeout(watchdog);
  console.log(`\n${renderConnectionsSection(run, null)}`);
  if (!opts.noDocs) log(`wrote ${writeConnectionsDocs(run, opts.docsDir)}`);
  return run.errors.length > 0 ? 1 : 0;
}

process.exitCode = await main();
