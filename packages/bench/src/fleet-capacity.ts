/**
 * What one server costs per connection, for docs/scaling.md: set-up rate, memory and the CPU
 * that idle connections take (keepalive probes and their answers, the timer sweep), on the
 * namespace NAT rig (`fake-tcp-e2e`, tunnel mode).
 *
 * 1. Server idle with no connection: CPU over `--idle-seconds`.
 * 2. `--flows` UDP flows at once from A (one fake-TCP connection each, admitted by the client
 *    at its default 1000 new peers a second).
 * 3. The flows fall silent; the connections stay (until --idle-timeout, 180 s), each probed
 *    by both ends every --keepalive (10 s, the default): CPU and RSS over `--idle-seconds`.
 *
 * Prints one JSON object. Usage (root, after a build):
 *   node packages/bench/dist/fleet-capacity.js [--flows 4000] [--idle-seconds 20]
 */
import { loadavg } from "node:os";
import { Rig } from "fake-tcp-e2e";
import { processCpuSeconds } from "./proc-stat.js";
import { measureScale } from "./scale.js";

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!(value > 0)) {
    console.error(`--${name} must be a positive number`);
    process.exit(2);
  }
  return value;
}

const flows = option("flows", 4000);
const idleSeconds = option("idle-seconds", 20);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// All flows come from one address (A behind R): the per-source limit must hold them all. New
// peers are admitted at the client's default rate (1000 a second): admitting thousands at once
// makes their handshakes race the 3 s handshake timeout on a busy machine.
const table = String(Math.max(4096, Math.ceil(flows * 1.2)));
const limits = ["--max-connections", table];

const loadBefore = loadavg()[0];
const rig = await Rig.create({
  mode: "tunnel",
  clientArgs: limits,
  serverArgs: [...limits, "--max-connections-per-source", table],
});
try {
  const server = rig.server!;
  const cpuIdle = async (): Promise<number> => {
    const start = processCpuSeconds(server.pid);
    await sleep(idleSeconds * 1000);
    return (processCpuSeconds(server.pid) - start) / idleSeconds;
  };
  await sleep(2_000);
  const baselineCpu = await cpuIdle();
  const rssBefore = server.rssBytes();
  const scale = await measureScale(rig, flows, 250, 60_000);
  await sleep(3_000);
  const rssAfter = server.rssBytes();
  const loadedCpu = await cpuIdle();
  // The stats line, not the log lines (those are rate-limited).
  const stats = await server.requestStats();
  const clientStats = await rig.client!.requestStats();
  const opened = Number(stats.connections ?? 0);
  const perConnection = opened > 0 ? 1 / opened : 0;
  console.log(
    JSON.stringify(
      {
        flows,
        answered: scale.answered,
        serverConnections: opened,
        setupFlowsPerSecond: scale.flowsPerSecond && Math.round(scale.flowsPerSecond),
        allAnsweredMs: scale.allAnsweredMs,
        serverRssMiB: [rssBefore, rssAfter].map((b) => b && Math.round((b / 2 ** 20) * 10) / 10),
        serverKiBPerConnection:
          rssBefore && rssAfter
            ? Math.round(((rssAfter - rssBefore) / 1024) * perConnection)
            : null,
        clientRssMiB: scale.rss?.client.map((b) => b && Math.round((b / 2 ** 20) * 10) / 10),
        serverCpuIdleNoConnections: Math.round(baselineCpu * 1000) / 1000,
        serverCpuIdleWithConnections: Math.round(loadedCpu * 1000) / 1000,
        serverCpuMicrosecondsPerIdleConnectionSecond: Math.round(
          (loadedCpu - baselineCpu) * 1e6 * perConnection,
        ),
        idleSeconds,
        serverStats: stats,
        clientStats,
        loadAverage: [loadBefore, loadavg()[0]].map((l) => Math.round(l * 100) / 100),
      },
      null,
      2,
    ),
  );
} finally {
  await rig.destroy();
}
