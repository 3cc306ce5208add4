/**
 * Rate-limited logging for every line an outsider can trigger (a connection opened or closed,
 * a socket that cannot be opened, a handler that throws on a packet): without a bound, a peer
 * that opens connections or sends bad packets in a loop decides how much the program writes.
 *
 * Each kind of line (by default its message) gets at most `lines` lines per `intervalMs`; the
 * rest are counted, and when the window ends one summary line says how many were suppressed:
 * `{"of":"connection opened","suppressed":N,"seconds":10,"msg":"log lines suppressed"}`, at the
 * level of the suppressed lines. Nothing is allocated for a line that is suppressed.
 */
import type { LogSink } from "./logger.js";

/** At most `lines` lines of one kind per `intervalMs`. */
export interface RateLimit {
  readonly lines: number;
  readonly intervalMs: number;
}

/** The default budget of one kind of line: 20 lines per 10 s. */
export const DEFAULT_RATE_LIMIT: RateLimit = { lines: 20, intervalMs: 10_000 };

/**
 * The budget of the per-connection lines ("connection opened", "connection closed"): enough for
 * a burst of real clients (every peer reconnecting after a restart), ~10 lines per second for
 * a peer that opens connections in a loop.
 */
export const CONNECTION_LOG_LIMIT: RateLimit = { lines: 100, intervalMs: 10_000 };

/** The message of the summary line. */
export const SUPPRESSED_MSG = "log lines suppressed";

/**
 * Kinds tracked at once: lines of further kinds share one budget, so that messages that
 * differ per line (an error text, say) cannot grow the table.
 */
export const MAX_KINDS = 64;
const OTHER_KIND = "(other)";

type Level = keyof LogSink;

interface Kind {
  /** Start of the current window (ms). */
  windowStart: number;
  /** Lines logged in the current window. */
  logged: number;
  /** Lines suppressed in the current window. */
  suppressed: number;
  /** Level and message of the suppressed lines (for the summary). */
  level: Level;
  msg: string;
  /** Fires at the end of a window in which lines were suppressed. */
  timer: ReturnType<typeof setTimeout> | null;
}

/** Options of {@link RateLimitedLog}. */
export interface RateLimitedLogOptions {
  readonly limit?: RateLimit;
  /** Clock (for tests). */
  readonly now?: () => number;
}

/**
 * A {@link LogSink} that passes at most `limit.lines` lines of each kind per window to `sink`
 * and summarizes the rest. The level methods use the message as the kind; {@link write} takes
 * an explicit kind for messages that vary.
 */
export class RateLimitedLog implements LogSink {
  private readonly kinds = new Map<string, Kind>();
  private readonly limit: RateLimit;
  private readonly now: () => number;
  private closed = false;

  constructor(
    private readonly sink: LogSink,
    options: RateLimitedLogOptions = {},
  ) {
    this.limit = options.limit ?? DEFAULT_RATE_LIMIT;
    this.now = options.now ?? Date.now;
    if (!(this.limit.lines >= 1 && this.limit.intervalMs > 0)) {
      throw new RangeError("a rate limit needs at least one line per positive interval");
    }
  }

  trace(obj: object, msg: string): void {
    this.write("trace", msg, obj, msg);
  }
  debug(obj: object, msg: string): void {
    this.write("debug", msg, obj, msg);
  }
  info(obj: object, msg: string): void {
    this.write("info", msg, obj, msg);
  }
  warn(obj: object, msg: string): void {
    this.write("warn", msg, obj, msg);
  }
  error(obj: object, msg: string): void {
    this.write("error", msg, obj, msg);
  }
  fatal(obj: object, msg: string): void {
    this.write("fatal", msg, obj, msg);
  }

  /**
   * Logs `msg` at `level` when kind `key` is within its budget; returns false when the line
   * was suppressed (and counted for the summary).
   */
  write(level: Level, key: string, obj: object, msg: string): boolean {
    const kind = this.kindOf(key, level, msg);
    const now = this.now();
    if (now - kind.windowStart >= this.limit.intervalMs) this.endWindow(kind, now);
    if (kind.logged < this.limit.lines) {
      kind.logged++;
      this.sink[level](obj, msg);
      return true;
    }
    kind.suppressed++;
    kind.level = level;
    kind.msg = msg;
    if (kind.timer === null && !this.closed) {
      const left = kind.windowStart + this.limit.intervalMs - now;
      kind.timer = setTimeout(
        () => {
          kind.timer = null;
          this.endWindow(kind, this.now());
        },
        Math.max(left, 1),
      );
      kind.timer.unref?.();
    }
    return false;
  }

  /** Lines suppressed so far in the current windows, over every kind (not yet summarized). */
  pending(): number {
    let n = 0;
    for (const kind of this.kinds.values()) n += kind.suppressed;
    return n;
  }

  /** Logs the summaries of every kind now (at stop, so that no count is lost) and stops the timers. */
  close(): void {
    this.closed = true;
    for (const kind of this.kinds.values()) {
      if (kind.timer !== null) clearTimeout(kind.timer);
      kind.timer = null;
      this.summarize(kind);
    }
  }

  private kindOf(key: string, level: Level, msg: string): Kind {
    let kind = this.kinds.get(key);
    if (kind === undefined) {
      if (this.kinds.size >= MAX_KINDS) {
        kind = this.kinds.get(OTHER_KIND);
        if (kind !== undefined) return kind;
        key = OTHER_KIND;
      }
      kind = { windowStart: this.now(), logged: 0, suppressed: 0, level, msg, timer: null };
      this.kinds.set(key, kind);
    }
    return kind;
  }

  /** Summarizes the window that ended and opens the next one at `now`. */
  private endWindow(kind: Kind, now: number): void {
    if (kind.timer !== null) clearTimeout(kind.timer);
    kind.timer = null;
    this.summarize(kind);
    kind.windowStart = now;
    kind.logged = 0;
  }

  private summarize(kind: Kind): void {
    if (kind.suppressed === 0) return;
    const suppressed = kind.suppressed;
    kind.suppressed = 0;
    this.sink[kind.level](
      { of: kind.msg, suppressed, seconds: this.limit.intervalMs / 1000 },
      SUPPRESSED_MSG,
    );
  }
}
