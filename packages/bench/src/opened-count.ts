/**
 * How many connections a program has opened since it started: its stats line's `opened`
 * counter (SIGUSR1). The "connection opened" log lines cannot be counted instead: they are
 * rate-limited (any peer can cause them), so past the budget they stop being a count.
 */
import type { TunnelProgram } from "fake-tcp-e2e";

const ATTEMPTS = 5;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The `opened` counter of a stats line, or null when a shard's share is missing (a shard busy
 * for more than a second answers the stats request with nothing).
 */
export function openedFromStats(stats: Record<string, unknown>): number | null {
  const shards = stats.shards;
  if (Array.isArray(shards)) {
    const counts = shards.map((s) => (s as Record<string, unknown> | null)?.opened);
    if (!counts.every((n) => typeof n === "number")) return null;
  }
  return typeof stats.opened === "number" ? stats.opened : null;
}

/** The program's `opened` counter, asked again (a few times) while a shard does not answer. */
export async function openedConnections(program: TunnelProgram): Promise<number | null> {
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const opened = openedFromStats(await program.requestStats(/^stats$/, 10_000));
    if (opened !== null) return opened;
    await sleep(500);
  }
  return null;
}
