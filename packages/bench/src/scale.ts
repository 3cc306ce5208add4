/**
 * Scale: many concurrent UDP flows (one source port each on A) through one tunnel client and
 * server, against the rig's echo on B. Measures how fast every flow got its first reply and
 * the programs' memory before and after.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Rig } from "fake-tcp-e2e";
import { openedConnections } from "./opened-count.js";
import { percentile } from "./percentile.js";

const FLOW_PROBE = join(dirname(fileURLToPath(import.meta.url)), "tools", "flow-probe.js");

export interface ScaleResult {
  flows: number;
  /** Flows that got an echo back before the deadline. */
  answered: number;
  /** Datagrams sent in all (flows + resends of unanswered flows). */
  datagramsSent: number;
  /** ms from the first send until the last flow got its first reply (null: some never did). */
  allAnsweredMs: number | null;
  /** Median ms until a flow's first reply. */
  medianFirstReplyMs: number | null;
  /** flows / (allAnsweredMs / 1000). */
  flowsPerSecond: number | null;
  /** RSS in bytes before/after, per program (tunnel mode only). */
  rss: { client: [number | null, number | null]; server: [number | null, number | null] } | null;
  /**
   * Connections the programs opened during the step (their stats' `opened` counters; null
   * where a program's shard never answered the stats request).
   */
  connectionsOpened: { client: number | null; server: number | null } | null;
}

/** `after - before`, or null when either is unknown. */
function grown(before: number | null, after: number | null): number | null {
  return before === null || after === null ? null : after - before;
}

/**
 * Opens `flows` sockets on A and has each send until its first echo comes back (resending
 * every `retryMs`), within `deadlineMs`.
 */
export async function measureScale(
  rig: Rig,
  flows: number,
  retryMs: number,
  deadlineMs: number,
): Promise<ScaleResult> {
  await rig.startEcho();
  const client = rig.mode === "tunnel" ? rig.client : null;
  const server = rig.mode === "tunnel" ? rig.server : null;
  const rssBefore = [client?.rssBytes() ?? null, server?.rssBytes() ?? null];
  const openedBefore =
    client && server ? [await openedConnections(client), await openedConnections(server)] : null;
  const t = rig.appTarget;
  const res = await rig.a.execAsync(
    process.execPath,
    [
      FLOW_PROBE,
      "--target",
      `${t.host}:${t.port}`,
      "--flows",
      String(flows),
      "--retry",
      String(retryMs),
      "--deadline",
      String(deadlineMs),
    ],
    deadlineMs + 30_000,
  );
  let probe: {
    answered: number;
    datagramsSent: number;
    allAnsweredMs: number | null;
    firstReplyMs: Array<number | null>;
  };
  try {
    probe = JSON.parse(res.stdout) as typeof probe;
  } catch {
    throw new Error(`flow probe failed (exit ${res.code}): ${res.stderr}${res.stdout}`);
  }
  const times = probe.firstReplyMs.filter((v): v is number => v !== null);
  const all = probe.allAnsweredMs;
  return {
    flows,
    answered: probe.answered,
    datagramsSent: probe.datagramsSent,
    allAnsweredMs: all === null ? null : Math.round(all),
    medianFirstReplyMs: times.length ? Math.round(percentile(times, 50)) : null,
    flowsPerSecond: all !== null ? flows / (Math.max(all, 1) / 1000) : null,
    rss:
      client && server
        ? {
            client: [rssBefore[0], client.rssBytes()],
            server: [rssBefore[1], server.rssBytes()],
          }
        : null,
    connectionsOpened:
      client && server && openedBefore
        ? {
            client: grown(openedBefore[0], await openedConnections(client)),
            server: grown(openedBefore[1], await openedConnections(server)),
          }
        : null,
  };
}
