/**
 * The shared rate-limited log: a budget per kind of line and window, the rest counted and
 * summarized once per window ("log lines suppressed" with the count), a bounded table of kinds.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import type { LogSink } from "../src/logger.js";
import { MAX_KINDS, RateLimitedLog, SUPPRESSED_MSG } from "../src/rate-limited-log.js";

type Line = { level: string; obj: Record<string, unknown>; msg: string };

function recordingSink(): { sink: LogSink; lines: Line[] } {
  const lines: Line[] = [];
  const at =
    (level: string) =>
    (obj: object, msg: string): void => {
      lines.push({ level, obj: obj as Record<string, unknown>, msg });
    };
  return {
    lines,
    sink: {
      trace: at("trace"),
      debug: at("debug"),
      info: at("info"),
      warn: at("warn"),
      error: at("error"),
      fatal: at("fatal"),
    },
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("RateLimitedLog", () => {
  it("passes the budget of each kind, then one summary per window with the count", () => {
    vi.useFakeTimers({ now: 0 });
    const { sink, lines } = recordingSink();
    const log = new RateLimitedLog(sink, { limit: { lines: 3, intervalMs: 1_000 } });
    for (let i = 0; i < 1_000; i++) log.info({ i }, "connection opened");
    for (let i = 0; i < 5; i++) log.warn({ i }, "cannot open a UDP socket");
    expect(lines.map((l) => l.msg)).toEqual([
      ...Array(3).fill("connection opened"),
      ...Array(3).fill("cannot open a UDP socket"),
    ]);
    expect(log.pending()).toBe(997 + 2);
    // The window ends: each kind's summary arrives by itself, at the level of its lines.
    vi.advanceTimersByTime(1_000);
    const summaries = lines.filter((l) => l.msg === SUPPRESSED_MSG);
    expect(summaries).toEqual([
      {
        level: "info",
        obj: { of: "connection opened", suppressed: 997, seconds: 1 },
        msg: SUPPRESSED_MSG,
      },
      {
        level: "warn",
        obj: { of: "cannot open a UDP socket", suppressed: 2, seconds: 1 },
        msg: SUPPRESSED_MSG,
      },
    ]);
    // A new window has a new budget; no summary for a window without suppression.
    lines.length = 0;
    log.info({}, "connection opened");
    vi.advanceTimersByTime(5_000);
    expect(lines.map((l) => l.msg)).toEqual(["connection opened"]);
  });

  it("summarizes what is pending at close, and keys varying messages by an explicit kind", () => {
    vi.useFakeTimers({ now: 0 });
    const { sink, lines } = recordingSink();
    const log = new RateLimitedLog(sink, { limit: { lines: 1, intervalMs: 10_000 } });
    for (let i = 0; i < 4; i++) log.write("warn", "handler threw", {}, `handler threw: error ${i}`);
    log.close();
    expect(lines).toEqual([
      { level: "warn", obj: {}, msg: "handler threw: error 0" },
      {
        level: "warn",
        obj: { of: "handler threw: error 3", suppressed: 3, seconds: 10 },
        msg: SUPPRESSED_MSG,
      },
    ]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("bounds the table of kinds: lines of further kinds share one budget", () => {
    vi.useFakeTimers({ now: 0 });
    const { sink, lines } = recordingSink();
    const log = new RateLimitedLog(sink, { limit: { lines: 2, intervalMs: 1_000 } });
    for (let i = 0; i < 10_000; i++) log.warn({}, `distinct message ${i}`);
    // MAX_KINDS kinds of their own, then one shared budget of 2 for all the others.
    expect(lines).toHaveLength(MAX_KINDS + 2);
    expect(log.pending()).toBe(10_000 - lines.length);
    log.close();
  });

  it("refuses a budget that would pass nothing", () => {
    const { sink } = recordingSink();
    expect(() => new RateLimitedLog(sink, { limit: { lines: 0, intervalMs: 1_000 } })).toThrow();
  });
});
