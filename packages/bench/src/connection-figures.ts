/**
 * Figures of the many-connection bench (`pnpm bench --connections N`): what was measured, the
 * derived ratios, and its section of docs/benchmarks.md. Pure: no rig, no processes.
 */
import type { LoadStep } from "fake-tcp-e2e";
import type { RunEnvironment } from "./results.js";

/** What the connection probe printed once set-up ended (see e2e tools/conn-probe.ts). */
export interface SetupFigures {
  connections: number;
  /** New connections a second the probe offered (0: all at once). */
  pace: number;
  answered: number;
  datagramsSent: number;
  bindMs: number;
  /** ms from the first send until the last connection carried its first echo (null: not all did). */
  allAnsweredMs: number | null;
  /** Per connection, ms from its first datagram to its first echo: median and 90th percentile. */
  medianFirstReplyMs: number | null;
  p90FirstReplyMs: number | null;
  /** [ms since the first send, connections answered] after each retry round. */
  progress: Array<[number, number]>;
}

/** One load step of the probe (its output format is defined beside the probe, in e2e). */
export type { LoadStep };

/** One program's side of the run. */
export interface ProgramFigures {
  /** RSS in bytes: freshly started and idle; with every connection open (null: unreadable). */
  rssBefore: number | null;
  rssAfter: number | null;
  /** Connections per shard from the stats line (`connections` of each shard), queue order. */
  shardConnections: number[];
  /** The stats line's counters read after set-up (totals over the shards). */
  stats: Record<string, unknown>;
}

export interface ConnectionsRun extends RunEnvironment {
  /** Connections asked for. */
  connections: number;
  /** The programs' extra arguments (limits raised for the run). */
  clientArgs: string[];
  serverArgs: string[];
  setup: SetupFigures | null;
  client: ProgramFigures | null;
  server: ProgramFigures | null;
  load: LoadStep[];
  errors: string[];
}

/** max / mean of the per-shard counts (1 = perfectly even); null without shards or connections. */
export function shardSpread(counts: readonly number[]): number | null {
  if (counts.length === 0) return null;
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  return Math.max(...counts) / (total / counts.length);
}

/**
 * The shards' `connections` from a stats line: each entry of `shards` (with more than one
 * shard) or the total (one shard). Null when the line has neither, or when a shard's entry
 * lacks the count (a busy shard that did not answer the stats request in time).
 */
export function shardConnections(stats: Record<string, unknown>): number[] | null {
  const shards = stats.shards;
  if (Array.isArray(shards)) {
    const counts = shards.map((s) => (s as Record<string, unknown> | null)?.connections);
    return counts.every((n) => typeof n === "number") ? (counts as number[]) : null;
  }
  return typeof stats.connections === "number" ? [stats.connections] : null;
}

/** RSS growth per connection in bytes (null when either RSS is missing or none connected). */
export function bytesPerConnection(p: ProgramFigures | null, connections: number): number | null {
  if (!p || p.rssBefore === null || p.rssAfter === null || connections <= 0) return null;
  return (p.rssAfter - p.rssBefore) / connections;
}

/** Connections per second until all were answered (null when some never were). */
export function setupRate(setup: SetupFigures | null): number | null {
  if (!setup || setup.allAnsweredMs === null) return null;
  return setup.connections / (Math.max(setup.allAnsweredMs, 1) / 1000);
}

const MIB = 1024 * 1024;

function mib(bytes: number | null): string {
  return bytes === null ? "—" : `${(bytes / MIB).toFixed(1)} MiB`;
}

function fixed(value: number | null, digits: number, unit = ""): string {
  return value === null ? "—" : `${value.toFixed(digits)}${unit}`;
}

function programRow(name: string, p: ProgramFigures | null, connections: number): string {
  const perConn = bytesPerConnection(p, connections);
  const spread = p ? shardSpread(p.shardConnections) : null;
  return `| ${name} | ${mib(p?.rssBefore ?? null)} | ${mib(p?.rssAfter ?? null)} | ${
    perConn === null ? "—" : `${(perConn / 1024).toFixed(1)} KiB`
  } | ${p?.shardConnections.join(" / ") || "—"} | ${fixed(spread, 3)} |`;
}

/** The run's section of docs/benchmarks.md. */
export function renderConnectionsSection(run: ConnectionsRun, jsonFile: string | null): string {
  const setup = run.setup;
  const connected = setup?.answered ?? 0;
  const rate = setupRate(setup);
  const serverRss = run.server?.rssAfter ?? null;
  const spread = run.server ? shardSpread(run.server.shardConnections) : null;
  const lines = [
    `### Connections run ${run.startedAt.toISOString()} — ${run.label}`,
    "",
    `Machine: ${run.cores} cores (shared with other work; load average ${run.loadAverage.toFixed(2)} at start, ` +
      `${run.loadAverageEnd.toFixed(2)} at the end), Node ${run.nodeVersion}, commit ${run.commit}. ` +
      `Run took ${Math.round(run.durationSeconds)} s. Client: \`${run.clientArgs.join(" ")}\`; ` +
      `server: \`${run.serverArgs.join(" ")}\`.`,
    "",
    `**${connected} of ${run.connections} connections** established and echoed; ` +
      `set-up ${fixed(rate, 0, " connections/s")} (${setup?.pace ? `offered at ${setup.pace}/s` : "offered all at once"}; all answered after ${fixed(setup?.allAnsweredMs ?? null, 0, " ms")}, ` +
      `per connection, first datagram to first echo: median ${fixed(setup?.medianFirstReplyMs ?? null, 0, " ms")}, p90 ${fixed(setup?.p90FirstReplyMs ?? null, 0, " ms")}; ` +
      `${setup?.datagramsSent ?? 0} set-up datagrams sent); server RSS with all open ${mib(serverRss)} ` +
      `(target < 200 MiB: ${serverRss === null ? "not measured" : serverRss < 200 * MIB ? "met" : "missed"}), ` +
      `server shards max/mean ${fixed(spread, 3)} (target < 1.3: ${spread === null ? "not measured" : spread < 1.3 ? "met" : "missed"}).`,
    "",
    "| Program | RSS idle | RSS, all open | per connection | connections per shard | max/mean |",
    "|---|---|---|---|---|---|",
    programRow("fake-tcp-client", run.client, connected),
    programRow("fake-tcp-server", run.server, connected),
  ];
  if (run.load.length > 0) {
    lines.push(
      "",
      "Echo load over open connections (1400-byte datagrams A→B→A, each crossing the tunnel both ways; rate offered by the probe, echoes counted on A):",
      "",
      "| Active flows | Offered Mbit/s | Sent Mbit/s | Echoed Mbit/s | Loss | Probe send drops |",
      "|---|---|---|---|---|---|",
      ...run.load.map(
        (s) =>
          `| ${s.flows} | ${s.offeredMbps} | ${s.sentMbps.toFixed(1)} | ${s.echoedMbps.toFixed(1)} | ${s.lossPercent.toFixed(2)} % | ${s.sendDrops} |`,
      ),
    );
  }
  if (run.errors.length > 0) {
    lines.push("", `Errors: ${run.errors.map((e) => `\`${e.replace(/`/g, "'")}\``).join("; ")}`);
  }
  if (jsonFile) lines.push("", `Raw figures: [${jsonFile}](${jsonFile}).`);
  return `${lines.join("\n")}\n`;
}

export const CONNECTIONS_TITLE = "## Connections (pnpm bench --connections N)";

export const CONNECTIONS_INTRO = `Command: \`pnpm bench --connections 10000 [--pace R] [--label NAME]\` (as root; builds, then
runs only this measurement, a few minutes). One rig (the same namespace NAT rig as above, tunnel
mode) with the programs' limits raised for the run (the arguments are in each run's line):
\`--max-connections\` on both (the client's peer table and each stack's table) and the
server's \`--max-connections-per-source\` (every connection reaches the server from R's one
public address); the client's \`--new-peer-rate\` stays at its default (1000 a second). The connection probe on A
(\`packages/e2e/src/tools/conn-probe.ts\`) binds N UDP sockets (source ports) aimed at the
client's \`--local\`; each is one UDP peer, so one fake-TCP connection through R, relayed by
the server to the echo on B over its own UDP socket.

- **Set-up rate**: the sockets send a 64-byte datagram each, R new ones a second
  (\`--pace\`, default 100; 0: all at once), and each still unanswered resends 1 s after
  its last send; the rate is N / time until the last connection got its first echo (a
  datagram went both ways through it). Per connection: time from its first datagram to its
  first echo.
- **Memory**: RSS (\`VmRSS\` of /proc/PID/status, the whole program: main thread, shard
  workers, native buffers) of fake-tcp-client and fake-tcp-server freshly started and idle,
  then with all N connections open (read 2 s after set-up); per connection = the difference / N.
- **Spread**: each shard's \`connections\` from the server's stats line (SIGUSR1; the
  \`shards\` list), max / mean.
- **Load**: the probe then sends 1400-byte datagrams at a fixed offered rate for a few seconds
  from 1 of the open sockets, then spread round-robin over 1,000 of them (runs of up to 8
  datagrams per socket; a stalled sender makes up at most 5 ms worth at once), and counts
  the echoes (each datagram crosses the tunnel twice).
  Same probe, same rates, so the two compare; the echoed rate is the path's, bounded by
  every process sharing the machine's cores.
`;

/** Returns the new file text with `runSection` appended to the connections section. */
export function appendConnectionsRun(existing: string | null, runSection: string): string {
  let text = existing ?? "# Benchmarks\n";
  if (!text.endsWith("\n")) text += "\n";
  const start = text.indexOf(`${CONNECTIONS_TITLE}\n`);
  if (start < 0) return `${text}\n${CONNECTIONS_TITLE}\n\n${CONNECTIONS_INTRO}\n${runSection}`;
  const afterTitle = start + CONNECTIONS_TITLE.length;
  const next = text.slice(afterTitle).search(/^## /m);
  const end = next < 0 ? text.length : afterTitle + next;
  const before = text.slice(0, end).replace(/\n*$/, "\n");
  const after = text.slice(end);
  return `${before}\n${runSection}${after ? `\n${after}` : ""}`;
}
