/**
 * Benchmark worker: attaches one queue to the device and counts packets and batches into a
 * shared Float64Array slot pair, so the parent can snapshot them without messages.
 */
import { parentPort, workerData } from "node:worker_threads";
import { TunQueue } from "../queue.js";

const { name, batchSize, index, shared, waitForGo } = workerData as {
  name: string;
  batchSize: number;
  index: number;
  shared: SharedArrayBuffer;
  /** Don't read until the parent says "go" (to drain a pre-filled ring). */
  waitForGo: boolean;
};
const counters = new Float64Array(shared);
const queue = TunQueue.attach(name, { batchSize });
let sum = 0;
const read = () =>
  queue.onReceive((batch) => {
    // Touch every packet's length so the reader does the minimum real work per packet.
    for (let i = 0; i < batch.count; i++) sum += batch.offsets[2 * i + 1];
    counters[3 * index] += batch.count;
    counters[3 * index + 1] += 1;
    counters[3 * index + 2] = performance.timeOrigin + performance.now();
  });
if (!waitForGo) read();
parentPort?.on("message", (msg) => {
  if (msg === "go") read();
  if (msg === "stop") {
    queue.close();
    parentPort?.postMessage({ bytes: sum });
    parentPort?.close();
  }
});
parentPort?.postMessage("ready");
