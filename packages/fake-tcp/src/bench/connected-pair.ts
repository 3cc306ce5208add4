/** Two stacks joined by the benchmark device, with one established connection between them. */
import type { Socket } from "../stack/socket.js";
import { Stack } from "../stack/stack.js";
import { type BenchQueue, benchPair } from "./bench-device.js";

/** Datagrams per round: what one receive batch of the programs holds. */
export const BATCH = 64;

/**
 * `tickMs` sets the stacks' timer period; the instruction count makes it longer than its run,
 * since how often a timer fires depends on the wall clock.
 */
export async function connectedPair(
  offload: boolean,
  family: 4 | 6,
  key?: Uint8Array,
  tickMs?: number,
) {
  const [qa, qb] = benchPair(1500, offload);
  const a = new Stack({ queues: [qa], local4: "10.0.0.1", local6: "fd00::1", key, tickMs });
  const b = new Stack({ queues: [qb], local4: "10.0.0.2", local6: "fd00::2", key, tickMs });
  b.listen(4567);
  // Flushed turn by turn (not on a timer), so that the set-up does the same work every run:
  // the instruction count (instruction-count.ts) relies on that.
  let done = false;
  const both = Promise.all([
    a.connect(family === 4 ? "10.0.0.2:4567" : "[fd00::2]:4567"),
    b.accept(),
  ]).finally(() => {
    done = true;
  });
  for (let turn = 0; turn < 100_000 && !done; turn++) {
    qa.flush();
    qb.flush();
    await new Promise((resolve) => setImmediate(resolve));
  }
  const [sa, sb] = await both;
  qa.flush();
  qb.flush();
  return { qa, qb, a, b, sa, sb };
}

/** One round: BATCH datagrams sent by `from`, then the batch handed to the other stack. */
export function sendRound(from: Socket, q: BenchQueue, payload: Buffer): () => void {
  return () => {
    for (let i = 0; i < BATCH; i++) from.send(payload);
    q.flush();
  };
}
