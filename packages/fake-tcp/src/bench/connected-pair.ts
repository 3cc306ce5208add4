/** Two stacks joined by the benchmark device, with one established connection between them. */
import type { Socket } from "../stack/socket.js";
import { Stack } from "../stack/stack.js";
import { type BenchQueue, benchPair } from "./bench-device.js";

/** Datagrams per round: what one receive batch of the programs holds. */
export const BATCH = 64;

export async function connectedPair(offload: boolean, family: 4 | 6, key?: Uint8Array) {
  const [qa, qb] = benchPair(1500, offload);
  const a = new Stack({ queues: [qa], local4: "10.0.0.1", local6: "fd00::1", key });
  const b = new Stack({ queues: [qb], local4: "10.0.0.2", local6: "fd00::2", key });
  b.listen(4567);
  const pump = setInterval(() => {
    qa.flush();
    qb.flush();
  }, 1);
  const [sa, sb] = await Promise.all([
    a.connect(family === 4 ? "10.0.0.2:4567" : "[fd00::2]:4567"),
    b.accept(),
  ]);
  clearInterval(pump);
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
