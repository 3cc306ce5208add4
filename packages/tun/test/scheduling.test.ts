/**
 * setTimeSlice: the slice is the calling thread's alone (a shard sets its own worker's), the
 * kernel reports it in /proc's scheduler statistics, and 0 gives the default back.
 */
import { readFileSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { schedSlices } from "../../../test-support/sched.js";
import { setTimeSlice } from "../src/index.js";

/** The calling thread's slice in ns, or null where the kernel keeps none (before 6.12). */
function sliceOfThisThread(): number | null {
  return schedSlices(readFileSync("/proc/thread-self/sched", "utf8"))[0] ?? null;
}

const kernelSlices = sliceOfThisThread() !== null;

describe("setTimeSlice", () => {
  it(`sets the calling thread's slice and gives the default back (${kernelSlices ? "kernel keeps per-thread slices" : "kernel before 6.12: returns 0"})`, () => {
    const before = sliceOfThisThread();
    try {
      const kept = setTimeSlice(8_000_000);
      if (!kernelSlices) {
        expect(kept).toBe(0);
        return;
      }
      expect(kept).toBe(8_000_000);
      expect(sliceOfThisThread()).toBe(8_000_000);
    } finally {
      const restored = setTimeSlice(0);
      if (kernelSlices) {
        expect(restored).toBe(before);
        expect(sliceOfThisThread()).toBe(before);
      }
    }
  });

  it("changes only the calling thread: a worker's slice leaves the main thread's alone", async () => {
    const before = sliceOfThisThread();
    const url = new URL("../dist/index.js", import.meta.url).href;
    const worker = new Worker(
      `import("${url}").then(({ setTimeSlice }) => {
        const kept = setTimeSlice(5_000_000);
        const sched = require("node:fs").readFileSync("/proc/thread-self/sched", "utf8");
        require("node:worker_threads").parentPort.postMessage({ kept, sched });
      });`,
      { eval: true },
    );
    const reply = await new Promise<{ kept: number; sched: string }>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    await worker.terminate();
    const workerSlice = schedSlices(reply.sched)[0] ?? null;
    expect({ kept: reply.kept, slice: workerSlice }).toEqual(
      kernelSlices ? { kept: 5_000_000, slice: 5_000_000 } : { kept: 0, slice: null },
    );
    expect(sliceOfThisThread()).toBe(before);
  });

  it("refuses a negative or missing value with a TypeError", () => {
    expect(() => setTimeSlice(-1)).toThrow(TypeError);
    expect(() => (setTimeSlice as (ns?: number) => number)()).toThrow(TypeError);
  });
});
