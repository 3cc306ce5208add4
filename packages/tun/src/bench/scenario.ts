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
  | { kind: "write"; flood: string; mode: "single" | "gather" | "batch"; seconds: number }
  | {
      /** TCP segments written with a partial checksum, forwarded by the kernel to a sink TUN. */
      kind: "tcpwrite";
      /** gather: one writeGather per segment; segmented: writeSegmented, SEGMENTS_PER_CALL. */
      mode: "gather" | "segmented";
      seconds: number;
    };

/** Addresses inside the benchmark namespace. */
export const BENCH_V4 = { local: "10.209.0.1", peer: "10.209.0.2" };
export const BENCH_PORT = 9000;
/** IP packet size measured (bytes). */
export const PACKET_BYTES = 1400;
/** Warm-up before the measured window, in seconds. */
export const WARMUP_SECONDS = 0.7;

/** Where forwarded TCP segments go in the tcpwrite runs: a second TUN nobody reads. */
export const SINK_V4 = { local: "10.209.1.1", peer: "10.209.1.2" };
/** Segments per writeSegmented call in the tcpwrite runs (TCP payload PACKET_BYTES each). */
export const SEGMENTS_PER_CALL = 40;
/** Datagrams per sendSegmented call in the UDP send runs (40 x 1400 B, within the limits). */
export const SEGMENTED_RUN = 40;
