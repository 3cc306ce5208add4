import { describe, expect, it } from "vitest";
import { UsageError } from "../src/errors.js";
import type { LogSink } from "../src/logger.js";
import {
  programStats,
  SHARD_YOUNG_GENERATION_MB,
  type ShardContext,
  startShards,
  sumStats,
} from "../src/shards.js";

const script = new URL("./fixtures/shard-worker.mjs", import.meta.url);

function recordingContext() {
  const lines: { level: string; obj: object; msg: string }[] = [];
  const fatals: unknown[] = [];
  const sink = (level: string) => (obj: object, msg: string) => lines.push({ level, obj, msg });
  const logger: LogSink = {
    trace: sink("trace"),
    debug: sink("debug"),
    info: sink("info"),
    warn: sink("warn"),
    error: sink("error"),
    fatal: sink("fatal"),
  };
  const context: ShardContext = { logger, fatal: (err) => fatals.push(err) };
  return { lines, fatals, context };
}

describe("sumStats", () => {
  it("adds numbers, sums nested records key by key, keeps the first of anything else", () => {
    expect(
      sumStats([
        { connections: 1, name: "a", stack: { sent: 2, closed: { local: 1 } } },
        { connections: 2, name: "b", stack: { sent: 3, closed: { local: 0, idle: 4 } } },
      ]),
    ).toEqual({ connections: 3, name: "a", stack: { sent: 5, closed: { local: 1, idle: 4 } } });
    expect(sumStats([])).toEqual({});
  });
});

describe("programStats", () => {
  it("adds each shard's own top-level counters, in order, when there are several", () => {
    const a = { connections: 1, name: "a", stack: { sent: 2 } };
    const b = { connections: 0, name: "b", stack: { sent: 3 } };
    expect(programStats([a, b])).toEqual({
      connections: 1,
      name: "a",
      stack: { sent: 5 },
      shards: [{ connections: 1 }, { connections: 0 }],
    });
    // One shard: the totals are its counters, nothing to spread.
    expect(programStats([a])).toEqual(a);
  });
});

describe("startShards with workers", () => {
  it("starts every shard, forwards log lines at the level, gathers stats, stops them", async () => {
    const { lines, fatals, context } = recordingContext();
    const shards = await startShards({
      count: 3,
      script,
      start: () => Promise.reject(new Error("not in this thread")),
      data: (index) => ({ index }),
      logLevel: "info",
      context,
    });
    expect(shards).toHaveLength(3);
    const stats = await Promise.all(shards.map((s) => s.stats()));
    expect(sumStats(stats)).toEqual({ name: "shard-0", packets: 60, nested: { a: 3 } });
    // Each worker's busy time, read from this thread: it started a shard, so it worked.
    const busy = shards.map((s) => s.busyMs());
    for (const ms of busy) expect(ms).toBeGreaterThan(0);
    await Promise.all(shards.map((s) => s.stop()));
    // Kept once the worker is gone (a counter must not go back to 0).
    expect(shards.map((s) => s.busyMs())).toEqual(busy);
    const started = lines.filter((l) => l.msg === "shard started").map((l) => l.obj);
    expect(started).toEqual(expect.arrayContaining([{ index: 0 }, { index: 1 }, { index: 2 }]));
    expect(lines.filter((l) => l.msg === "shard stopped")).toHaveLength(3);
    expect(lines.some((l) => l.msg === "below the level")).toBe(false);
    expect(fatals).toEqual([]);
    // A stopped shard answers stats with nothing rather than hanging.
    expect(await shards[0].stats()).toEqual({});
  });

  it("runs each worker with the small young generation (short scavenge pauses)", async () => {
    const { context } = recordingContext();
    const shards = await startShards({
      count: 2,
      script,
      start: () => Promise.reject(new Error("not in this thread")),
      data: (index) => ({ index, report: "limits" }),
      logLevel: "info",
      context,
    });
    try {
      const stats = await Promise.all(shards.map((s) => s.stats()));
      expect(stats).toEqual([
        { youngGenerationMb: SHARD_YOUNG_GENERATION_MB },
        { youngGenerationMb: SHARD_YOUNG_GENERATION_MB },
      ]);
    } finally {
      await Promise.all(shards.map((s) => s.stop()));
    }
  });

  it("a shard's bad input fails the start with a UsageError; the others are stopped", async () => {
    const { lines, context } = recordingContext();
    const start = startShards({
      count: 2,
      script,
      start: () => Promise.reject(new Error("not in this thread")),
      data: (index) => ({ index, fail: index === 1 ? "usage" : undefined }),
      logLevel: "info",
      context,
    });
    await expect(start).rejects.toThrow(UsageError);
    await expect(start).rejects.toThrow("shard 1: port taken");
    expect(lines.filter((l) => l.msg === "shard stopped")).toHaveLength(1);
  });

  it("an internal start error stays an internal error", async () => {
    const { context } = recordingContext();
    const start = startShards({
      count: 2,
      script,
      start: () => Promise.reject(new Error("not in this thread")),
      data: (index) => ({ index, fail: "internal" }),
      logLevel: "info",
      context,
    });
    await expect(start).rejects.toThrow(/broken/);
    await start.catch((err) => expect(err).not.toBeInstanceOf(UsageError));
  });

  it("one shard runs in the calling thread", async () => {
    const { context } = recordingContext();
    const [shard] = await startShards({
      count: 1,
      script,
      start: async () => ({ stats: () => ({ here: 1 }), stop: async () => {} }),
      data: () => ({}),
      logLevel: "info",
      context,
    });
    expect(await shard.stats()).toEqual({ here: 1 });
    await shard.stop();
  });
});
