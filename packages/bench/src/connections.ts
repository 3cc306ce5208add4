/**
 * `pnpm bench --connections N`: N fake-TCP connections through the namespace NAT rig. Measures
 * the set-up rate, the programs' RSS per connection, the spread over the server's shards and
 * echo throughput over 1 vs 1,000 active connections (see CONNECTIONS_INTRO for the method).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { join } from "node:path";
import { ManagedProcess, type TunnelProgram, toolPath } from "fake-tcp-e2e";
import {
  appendConnectionsRun,
  type ConnectionsRun,
  type LoadStep,
  type ProgramFigures,
  renderConnectionsSection,
  type SetupFigures,
  shardConnections,
} from "./connection-figures.js";
import { REPO_ROOT_DIR, Rig } from "./rig-access.js";

export interface ConnectionsPlan {
  connections: number;
  label: string;
  /** Active flows of the load steps (the first is the single-flow reference). */
  loadFlows: number[];
  /** Offered rates of the load steps, Mbit/s. */
  loadMbps: number[];
  loadSeconds: number;
  retryMs: number;
  setupDeadlineMs: number;
}

/**
 * The programs' limits for `connections`: tables with room to spare (a connection of an
 * earlier probe round may linger) and every connection allowed from R's single public
 * address. New peers are admitted at the client's default `--new-peer-rate` (1000 a second):
 * admitting 10,000 at once makes 10,000 handshakes race their 3 s timeout on a busy machine,
 * and those that lose retry and pile up (measured: a third connected after two minutes).
 */
export function connectionArgs(connections: number): { client: string[]; server: string[] } {
  const table = String(Math.max(4096, Math.ceil(connections * 1.2)));
  return {
    client: ["--max-connections", table],
    server: ["--max-connections", table, "--max-connections-per-source", table],
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function jsonEvent(proc: ManagedProcess, event: string, timeoutMs: number) {
  return proc.waitFor((l) => l.json?.event === event, timeoutMs).then((l) => l.json!);
}

/**
 * RSS now and the stats line. A shard busy for more than a second answers the stats request
 * with nothing, so the request is repeated (a few times) until every shard's count is there.
 */
async function programFigures(
  program: TunnelProgram,
  rssBefore: number | null,
): Promise<ProgramFigures> {
  const rssAfter = program.rssBytes();
  for (let attempt = 1; ; attempt++) {
    const stats = await program.requestStats(/^stats$/, 10_000);
    const counts = shardConnections(stats);
    if (counts !== null || attempt === 5) {
      return { rssBefore, rssAfter, shardConnections: counts ?? [], stats };
    }
    await sleep(500);
  }
}

/** Runs the measurement on a fresh rig; failures are recorded in `errors`, never thrown. */
export async function measureConnections(
  plan: ConnectionsPlan,
  log: (line: string) => void,
  commit: string,
): Promise<ConnectionsRun> {
  const startedAt = new Date();
  const t0 = performance.now();
  const args = connectionArgs(plan.connections);
  const run: ConnectionsRun = {
    label: plan.label,
    startedAt,
    durationSeconds: 0,
    cores: availableParallelism(),
    nodeVersion: process.version,
    commit,
    loadAverage: loadavg()[0],
    loadAverageEnd: 0,
    connections: plan.connections,
    clientArgs: args.client,
    serverArgs: args.server,
    setup: null,
    client: null,
    server: null,
    load: [],
    errors: [],
  };
  let rig: Rig | null = null;
  let probe: ManagedProcess | null = null;
  try {
    log("connections: building the rig");
    rig = await Rig.create({ mode: "tunnel", clientArgs: args.client, serverArgs: args.server });
    const client = rig.client!;
    const server = rig.server!;
    await rig.startEcho();
    // Idle programs: let start-up garbage settle before the baseline.
    await sleep(2_000);
    const before = { client: client.rssBytes(), server: server.rssBytes() };
    const t = rig.appTarget;
    log(`connections: probe with ${plan.connections} sockets`);
    probe = new ManagedProcess("conn-probe@A", rig.a, process.execPath, [
      toolPath("conn-probe"),
      "--target",
      `${t.host}:${t.port}`,
      "--connections",
      String(plan.connections),
      "--retry",
      String(plan.retryMs),
      "--deadline",
      String(plan.setupDeadlineMs),
      "--hold",
      "120000",
      "--load-flows",
      plan.loadFlows.join(","),
      "--load-mbps",
      plan.loadMbps.join(","),
      "--load-seconds",
      String(plan.loadSeconds),
    ]);
    const setup = (await jsonEvent(
      probe,
      "established",
      plan.setupDeadlineMs + 60_000,
    )) as unknown as SetupFigures;
    run.setup = setup;
    log(
      `connections: ${setup.answered}/${setup.connections} answered, all after ${setup.allAnsweredMs} ms`,
    );
    // Handshakes and relays of the last rounds settle; then the open-connection figures.
    await sleep(2_000);
    run.client = await programFigures(client, before.client);
    run.server = await programFigures(server, before.server);
    log(
      `connections: RSS client ${run.client.rssAfter} server ${run.server.rssAfter}; server shards ${run.server.shardConnections.join("/")}`,
    );
    probe.signal("SIGUSR2");
    const steps = plan.loadFlows.length * plan.loadMbps.length;
    const load = await jsonEvent(probe, "load", steps * (plan.loadSeconds + 2) * 1000 + 30_000);
    run.load = load.steps as LoadStep[];
  } catch (err) {
    run.errors.push(errorText(err));
    log(`connections: FAILED: ${errorText(err)}`);
    if (probe) log(probe.tail(10));
  } finally {
    await probe?.stop(2_000);
    await rig?.destroy();
  }
  run.loadAverageEnd = loadavg()[0];
  run.durationSeconds = (performance.now() - t0) / 1000;
  return run;
}

/** Writes the raw JSON and appends the section to benchmarks.md; returns the JSON's path. */
export function writeConnectionsDocs(run: ConnectionsRun, docsDir: string | null): string {
  const docs = docsDir ?? join(REPO_ROOT_DIR, "docs");
  mkdirSync(docs, { recursive: true });
  const stamp = run.startedAt.toISOString().slice(0, 16).replace(/:/g, "");
  const safeLabel = run.label.replace(/[^\w.-]+/g, "_");
  const jsonName = `bench-connections-${stamp}Z-${safeLabel}.json`;
  writeFileSync(join(docs, jsonName), `${JSON.stringify(run, null, 1)}\n`);
  const mdPath = join(docs, "benchmarks.md");
  const existing = existsSync(mdPath) ? readFileSync(mdPath, "utf8") : null;
  writeFileSync(mdPath, appendConnectionsRun(existing, renderConnectionsSection(run, jsonName)));
  return join(docs, jsonName);
}
