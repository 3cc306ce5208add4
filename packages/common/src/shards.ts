/**
 * Shared-nothing shards: each shard (a stack on its own TUN queue, its connections and UDP
 * sockets) runs in its own worker_thread, or in the main thread when there is only one. The
 * main thread and its shards talk only about rare things over the worker's MessagePort
 * (start, log lines, stats on request, stop), never per packet.
 */
import { performance } from "node:perf_hooks";
import v8 from "node:v8";
import {
  MessageChannel,
  type MessagePort,
  parentPort,
  Worker,
  workerData,
} from "node:worker_threads";
import { oneLine, UsageError } from "./errors.js";
import type { LogLevel, LogSink } from "./logger.js";
import { ShardMesh } from "./shard-mesh.js";

/** What shard code gets from the program around it. */
export interface ShardContext {
  /** Log lines (in a worker: forwarded to the main thread's logger). */
  readonly logger: LogSink;
  /** Reports a failure that should stop the program. */
  fatal(err: unknown): void;
  /**
   * Messages to the program's other shards (rare ones, and the batches of a UDP peer spread
   * over connections in several shards). Absent in a test's hand-made context: a shard then
   * uses a mesh of itself alone.
   */
  readonly mesh?: ShardMesh;
}

/** A started shard, as its own code sees it. */
export interface RunningShard {
  /** Counters of this shard (plain numbers and nested records of numbers). */
  stats(): Record<string, unknown>;
  /** Resets every connection of the shard (RST) and releases its queue and sockets. */
  stop(): Promise<void>;
}

/** Starts a shard from its (structured-clonable) data. Rejects with a `UsageError` for bad input. */
export type ShardStarter<D> = (data: D, context: ShardContext) => Promise<RunningShard>;

/** A running shard, as the main thread sees it. */
export interface ShardHandle {
  stats(): Promise<Record<string, unknown>>;
  /** Milliseconds the shard's thread has spent working (not waiting) since it started. */
  busyMs(): number;
  stop(): Promise<void>;
}

/** How long the main thread waits for a shard's stats or its stop before giving up on it. */
const STATS_TIMEOUT_MS = 1_000;
const STOP_TIMEOUT_MS = 1_000;

type ToShard = { t: "stats"; id: number } | { t: "stop" };
type FromShard =
  | { t: "ready" }
  | { t: "startError"; usage: boolean; message: string }
  | { t: "log"; level: SinkLevel; obj: object; msg: string }
  | { t: "stats"; id: number; stats: Record<string, unknown> }
  | { t: "stopped" }
  | { t: "fatal"; message: string };

type SinkLevel = keyof LogSink;

/**
 * Young generation of a shard worker's heap, in MiB (V8 splits it into two semi-spaces and a
 * space for large new objects: 3 MiB gives 1 MiB semi-spaces). A shard allocates a little
 * per datagram, so a scavenge comes every second or two at 100 Mbit/s whatever the size; with
 * V8's default (semi-spaces growing to 16 MiB) each one stopped the shard for 1.5-5 ms, long
 * enough to show in the echo p99; at 1 MiB they take 0.2-0.5 ms, twice as often, for less GC
 * time in all (docs/benchmarks.md, "Echo latency").
 */
export const SHARD_YOUNG_GENERATION_MB = 3;

/** What the main thread hands a worker: the shard's own data and how much to log. */
interface WorkerEnvelope<D> {
  readonly logLevel: LogLevel;
  readonly data: D;
  /** This shard's index and its ports to the other shards (see `ShardMesh`). */
  readonly index: number;
  readonly links: (MessagePort | null)[];
}

/** Starts a shard in the calling thread (the one-shard case: no worker, no messages). */
export async function startLocalShard<D>(
  start: ShardStarter<D>,
  data: D,
  context: ShardContext,
): Promise<ShardHandle> {
  const shard = await start(data, { ...context, mesh: context.mesh ?? new ShardMesh(0) });
  return {
    stats: async () => shard.stats(),
    busyMs: () => performance.eventLoopUtilization().active,
    stop: () => shard.stop(),
  };
}

/**
 * Starts a shard in a new worker running `script` (a module that calls
 * {@link runShardWorker}). Resolves once the shard is running; rejects with its start error
 * (a `UsageError` when it was bad input) after the worker is gone.
 */
export function spawnShard<D>(
  script: URL,
  data: D,
  logLevel: LogLevel,
  context: ShardContext,
  mesh: { index: number; links: (MessagePort | null)[] } = { index: 0, links: [] },
): Promise<ShardHandle> {
  const envelope: WorkerEnvelope<D> = { logLevel, data, ...mesh };
  const transferList = mesh.links.filter((port): port is MessagePort => port !== null);
  const worker = new Worker(script, {
    workerData: envelope,
    transferList,
    resourceLimits: { maxYoungGenerationSizeMb: SHARD_YOUNG_GENERATION_MB },
  });
  const pendingStats = new Map<number, (stats: Record<string, unknown>) => void>();
  let nextId = 0;
  let state: "starting" | "running" | "stopping" | "exited" = "starting";
  let onStopped: (() => void) | null = null;
  let busyMs = 0;

  return new Promise<ShardHandle>((resolve, reject) => {
    const handle: ShardHandle = {
      stats: () => {
        if (state !== "running") return Promise.resolve({});
        const id = nextId++;
        return new Promise((done) => {
          const timer = setTimeout(() => {
            pendingStats.delete(id);
            done({});
          }, STATS_TIMEOUT_MS);
          pendingStats.set(id, (stats) => {
            clearTimeout(timer);
            done(stats);
          });
          worker.postMessage({ t: "stats", id } satisfies ToShard);
        });
      },
      busyMs: () => {
        // Read from this thread, no message: kept once the worker is gone.
        if (state === "running") busyMs = worker.performance.eventLoopUtilization().active;
        return busyMs;
      },
      stop: async () => {
        if (state === "exited") return;
        state = "stopping";
        await new Promise<void>((done) => {
          const timer = setTimeout(done, STOP_TIMEOUT_MS);
          onStopped = () => {
            clearTimeout(timer);
            done();
          };
          worker.postMessage({ t: "stop" } satisfies ToShard);
        });
        await worker.terminate();
      },
    };
    worker.on("message", (m: FromShard) => {
      switch (m.t) {
        case "ready":
          state = "running";
          resolve(handle);
          break;
        case "startError":
          state = "stopping";
          void worker.terminate();
          reject(m.usage ? new UsageError(m.message) : new Error(m.message));
          break;
        case "log":
          context.logger[m.level](m.obj, m.msg);
          break;
        case "stats":
          pendingStats.get(m.id)?.(m.stats);
          pendingStats.delete(m.id);
          break;
        case "stopped":
          onStopped?.();
          break;
        case "fatal":
          if (state === "running") context.fatal(new Error(m.message));
          break;
      }
    });
    worker.on("error", (err) => {
      if (state === "starting") reject(err);
      else if (state === "running") context.fatal(err);
    });
    worker.on("exit", (code) => {
      const was = state;
      state = "exited";
      onStopped?.();
      for (const done of pendingStats.values()) done({});
      pendingStats.clear();
      if (was === "starting")
        reject(new Error(`shard worker exited (code ${code}) while starting`));
      else if (was === "running") context.fatal(new Error(`shard worker exited (code ${code})`));
    });
  });
}

/**
 * Starts `count` shards: in the calling thread when `count` is 1, else one worker each.
 * If any fails to start, the others are stopped and the first error is thrown.
 */
export async function startShards<D>(options: {
  readonly count: number;
  readonly script: URL;
  readonly start: ShardStarter<D>;
  readonly data: (index: number) => D;
  readonly logLevel: LogLevel;
  readonly context: ShardContext;
}): Promise<ShardHandle[]> {
  if (options.count === 1) {
    return [await startLocalShard(options.start, options.data(0), options.context)];
  }
  disableMemoryReducer();
  const links = meshLinks(options.count);
  const results = await Promise.allSettled(
    Array.from({ length: options.count }, (_, i) =>
      spawnShard(options.script, options.data(i), options.logLevel, options.context, {
        index: i,
        links: links[i],
      }),
    ),
  );
  const started = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = results.find((r) => r.status === "rejected");
  if (failed) {
    await Promise.all(started.map((s) => s.stop()));
    throw failed.reason;
  }
  return started;
}

/** One MessageChannel per pair of shards: `links[i][j]` is shard i's port to shard j. */
function meshLinks(count: number): (MessagePort | null)[][] {
  const links = Array.from({ length: count }, () =>
    Array.from({ length: count }, (): MessagePort | null => null),
  );
  for (let i = 0; i < count; i++) {
    for (let j = i + 1; j < count; j++) {
      const { port1, port2 } = new MessageChannel();
      links[i][j] = port1;
      links[j][i] = port2;
    }
  }
  return links;
}

/**
 * V8's memory reducer runs up to three full, compacting collections about 8 s after an
 * isolate's allocation rate drops (after start-up, after every burst of traffic): pauses of
 * several ms on the thread that carries the datagrams, measured as the worst echo delays of
 * the tunnel. A shard's heap is small and its traffic allocates only short-lived objects, so
 * what the reducer gives back is not worth those pauses. The flag applies to isolates created
 * after it is set, i.e. the workers.
 */
function disableMemoryReducer(): void {
  v8.setFlagsFromString("--no-memory-reducer");
}

const LEVEL_RANK: Record<LogLevel, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Number.POSITIVE_INFINITY,
};

/**
 * The body of a shard worker script: starts the shard with the data the main thread passed,
 * forwards its log lines (those at or above the program's level), answers stats requests and
 * stops on request. Call it once, at the top level of the worker module.
 */
export function runShardWorker<D>(start: ShardStarter<D>): void {
  const port = parentPort;
  if (port === null) throw new Error("runShardWorker must run in a worker_thread");
  const envelope = workerData as WorkerEnvelope<D>;
  const post = (m: FromShard) => port.postMessage(m);
  const threshold = LEVEL_RANK[envelope.logLevel];
  const sinkLevel =
    (level: SinkLevel) =>
    (obj: object, msg: string): void => {
      if (LEVEL_RANK[level] >= threshold) post({ t: "log", level, obj, msg });
    };
  const logger: LogSink = {
    trace: sinkLevel("trace"),
    debug: sinkLevel("debug"),
    info: sinkLevel("info"),
    warn: sinkLevel("warn"),
    error: sinkLevel("error"),
    fatal: sinkLevel("fatal"),
  };
  const context: ShardContext = {
    logger,
    fatal: (err) => post({ t: "fatal", message: oneLine(err) }),
    mesh: new ShardMesh(envelope.index, envelope.links),
  };
  start(envelope.data, context).then(
    (shard) => {
      port.on("message", (m: ToShard) => {
        if (m.t === "stats") post({ t: "stats", id: m.id, stats: shard.stats() });
        else if (m.t === "stop") {
          shard.stop().then(
            () => post({ t: "stopped" }),
            (err: unknown) => {
              logger.error({ err: oneLine(err) }, "shard stop failed");
              post({ t: "stopped" });
            },
          );
        }
      });
      post({ t: "ready" });
    },
    (err: unknown) =>
      post({ t: "startError", usage: err instanceof UsageError, message: oneLine(err) }),
  );
}

/**
 * The counters of a program's stats line: the shards' counters summed ({@link sumStats}) and,
 * with more than one shard, `shards`: each shard's own top-level counters in queue order (the
 * nested records stay summed only), which shows how the traffic is spread over the queues.
 */
export function programStats(list: readonly Record<string, unknown>[]): Record<string, unknown> {
  const total = sumStats(list);
  if (list.length > 1) {
    total.shards = list.map((stats) =>
      Object.fromEntries(Object.entries(stats).filter(([, value]) => typeof value === "number")),
    );
  }
  return total;
}

/**
 * Sums the shards' counters: numbers add up, nested records are summed key by key, anything
 * else is taken from the first shard that has it.
 */
export function sumStats(list: readonly Record<string, unknown>[]): Record<string, unknown> {
  const total: Record<string, unknown> = {};
  for (const stats of list) {
    for (const [key, value] of Object.entries(stats)) {
      const have = total[key];
      if (typeof value === "number") {
        total[key] = (typeof have === "number" ? have : 0) + value;
      } else if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        const nested = have !== null && typeof have === "object" ? [have, value] : [value];
        total[key] = sumStats(nested as Record<string, unknown>[]);
      } else if (!(key in total)) {
        total[key] = value;
      }
    }
  }
  return total;
}
