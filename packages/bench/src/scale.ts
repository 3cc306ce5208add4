/**
 * Scale: many concurrent UDP flows (one source port each on A) through one tunnel client and
 * server, against the rig's echo on B. Measures how fast every flow got its first reply and
 * the programs' memory before and after.
 */
import type { Rig } from "fake-tcp-e2e";

export interface ScaleResult {
  flows: number;
  /** Flows that got at least one echo back. */
  answered: number;
  /** ms from the first send until the last flow got its first reply. */
  allAnsweredMs: number | null;
  /** answered / (allAnsweredMs / 1000). */
  flowsPerSecond: number | null;
  /** RSS in bytes before/after, per program (tunnel mode only). */
  rss: { client: [number | null, number | null]; server: [number | null, number | null] } | null;
  connectionsOpened: { client: number; server: number } | null;
}

/**
 * Opens `flows` sockets on A, each sending a datagram (and a second one `retryMs` later, in
 * case the first was lost while its connection was being set up) and waiting for the echoes.
 */
export async function measureScale(rig: Rig, flows: number, retryMs: number): Promise<ScaleResult> {
  await rig.startEcho();
  const client = rig.mode === "tunnel" ? rig.client : null;
  const server = rig.mode === "tunnel" ? rig.server : null;
  const rssBefore = [client?.rssBytes() ?? null, server?.rssBytes() ?? null];
  const openedBefore = [client?.connectionsOpened() ?? 0, server?.connectionsOpened() ?? 0];
  const res = await rig.udpEcho({
    sockets: flows,
    count: 2,
    size: 64,
    intervalMs: retryMs,
    waitMs: 5_000,
  });
  const firsts = res.sockets.map((s) => s.firstReplyMs).filter((v): v is number => v !== null);
  const answered = firsts.length;
  const allAnsweredMs = answered === flows ? Math.max(...firsts) : null;
  return {
    flows,
    answered,
    allAnsweredMs,
    flowsPerSecond: allAnsweredMs !== null ? flows / (Math.max(allAnsweredMs, 1) / 1000) : null,
    rss:
      client && server
        ? {
            client: [rssBefore[0], client.rssBytes()],
            server: [rssBefore[1], server.rssBytes()],
          }
        : null,
    connectionsOpened:
      client && server
        ? {
            client: client.connectionsOpened() - openedBefore[0],
            server: server.connectionsOpened() - openedBefore[1],
          }
        : null,
  };
}
