/** What one benchmark run measures, passed from the orchestrator to the child as JSON. */
export type Scenario =
  | { kind: "source"; flood: string; flows: number; threads: number; seconds: number }
  | {
      kind: "read";
      flood: string;
      /** 0: read on the main thread; N: N worker_threads, one attached queue each. */
      workers: number;
      batchSize: number;
      flows: number;
      threads: number;
      seconds: number;
    }
  | {
      kind: "drain";
      flood: string;
      /** 0: main thread; N: N worker_threads. */
      workers: number;
      batchSize: number;
      /** Packets each queue's ring holds (the device's txqueuelen). */
      fill: number;
    }
  | { kind: "write"; flood: string; mode: "single" | "gather" | "batch"; seconds: number };

/** Addresses inside the benchmark namespace. */
export const BENCH_V4 = { local: "10.209.0.1", peer: "10.209.0.2" };
export const BENCH_PORT = 9000;
/** IP packet size measured (bytes). */
export const PACKET_BYTES = 1400;
/** Warm-up before the measured window, in seconds. */
export const WARMUP_SECONDS = 0.7;
