/**
 * When a UDP peer may have a new connection after its last one failed.
 *
 * Without this, a server that resets every connection (say, because it cannot deliver to its
 * application) met a new connection for every datagram of an active peer: one every few ms.
 * Now a peer whose connection failed waits before the next one: the first retry goes at once
 * (a restarted server or a lost NAT mapping heals with one retry), the next after about 0.5 s,
 * then the waits double up to 5 s, each varied by a quarter either way so that peers that
 * failed together do not retry together. A connection that stayed up {@link STABLE_MS} and
 * carried datagrams from the server clears the schedule.
 *
 * Attempts are only made for a peer that sends (the shard asks here when a datagram finds no
 * session), so an idle peer never reconnects. The schedules live here, apart from the peer
 * table that forgets a session when it ends; they are bounded in number (a flood of peers
 * pushes out the oldest) and forgotten {@link FORGET_MS} after their last failure.
 *
 * Beyond each peer's schedule, retries of peers whose retry already failed share one token
 * bucket per shard: however many peers are active, a server that fails every connection sees
 * only a handful of attempts a second from the client.
 */
import { TokenBucket } from "fake-tcp-common";

/** The wait before the second retry; each later wait doubles, up to {@link MAX_DELAY_MS}. */
export const FIRST_DELAY_MS = 500;
export const MAX_DELAY_MS = 5_000;
/** Each wait is varied by up to this fraction either way. */
export const JITTER = 0.25;
/** A connection that stayed up this long and carried datagrams from the server proved itself. */
export const STABLE_MS = 10_000;
/** A peer's schedule is forgotten this long after its last failure. */
export const FORGET_MS = 60_000;
/** Retries of peers already failing twice running, per second and at once, for the client. */
export const RETRY_RATE_PER_SECOND = 5;
export const RETRY_BURST = 10;

/** What a connection's end says about the path to the server. */
export type ConnectionOutcome =
  /** Stayed up and carried traffic: the peer's schedule is cleared. */
  | "stable"
  /** Refused, reset or dead before it proved itself: the next attempt waits longer. */
  | "failed"
  /** Ended by the client itself (eviction, idle timeout, shutdown): changes nothing. */
  | "neutral";

/** Close causes that are the client's own decision, not the path's failure. */
const OWN_CAUSES: ReadonlySet<string> = new Set(["local", "evicted", "idle-timeout"]);

/**
 * The outcome of a connection that ended with `cause` after being open `openMs` (undefined:
 * never opened), having received `fromServer` datagrams.
 */
export function connectionOutcome(
  cause: string,
  openMs: number | undefined,
  fromServer: number,
): ConnectionOutcome {
  if (openMs !== undefined && openMs >= STABLE_MS && fromServer > 0) return "stable";
  return OWN_CAUSES.has(cause) ? "neutral" : "failed";
}

/**
 * The wait (ms) before the next attempt of a peer whose connections failed `failures` times
 * running; `random` in [0, 1) picks the variation.
 */
export function retryDelayMs(failures: number, random: number): number {
  if (failures <= 1) return 0;
  const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.min(failures - 2, 20));
  return Math.round(base * (1 - JITTER + 2 * JITTER * random));
}

/** Counters for the client's stats. */
export interface BackoffCounters {
  /** Connection attempts for a peer whose previous connection failed. */
  reconnects: number;
  /** Times a peer's reconnect had to wait (once per wait, however many datagrams came). */
  reconnectsDeferred: number;
}

/** Options of {@link ReconnectBackoff}. */
export interface ReconnectBackoffOptions {
  /** Schedules kept at most (the oldest is forgotten first). */
  readonly maxPeers: number;
  /** This shard's part of {@link RETRY_RATE_PER_SECOND} and {@link RETRY_BURST}. */
  readonly retryRatePerSecond: number;
  readonly retryBurst: number;
  /** The clock's time at creation (ms). */
  readonly now: number;
  /** Source of the variation (for tests). */
  readonly random?: () => number;
  /** Told when a peer's reconnect starts to wait. */
  readonly onDeferred?: (key: string, failures: number, waitMs: number) => void;
}

interface Schedule {
  /** Connections that failed running. */
  failures: number;
  /** The next attempt may start at this time. */
  retryAt: number;
  /** When the last failure was recorded (the map is in this order). */
  failedAt: number;
  /** A wait was already counted and reported for the coming attempt. */
  deferred: boolean;
}

/** The reconnect schedules of one shard's peers, by peer key (`ip:port`). */
export class ReconnectBackoff {
  readonly counters: BackoffCounters = { reconnects: 0, reconnectsDeferred: 0 };
  /** Insertion order is the order of the last failure: the oldest come first. */
  private readonly schedules = new Map<string, Schedule>();
  private readonly retries: TokenBucket;
  private readonly random: () => number;

  constructor(private readonly options: ReconnectBackoffOptions) {
    if (!(options.maxPeers >= 1)) throw new RangeError("maxPeers must be at least 1");
    this.retries = new TokenBucket(options.retryRatePerSecond, options.retryBurst, options.now);
    this.random = options.random ?? Math.random;
  }

  /** Peers with a schedule now. */
  get size(): number {
    return this.schedules.size;
  }

  /** How many connections of `key` failed running (0 when it has no schedule). */
  failures(key: string, now: number): number {
    return this.scheduleOf(key, now)?.failures ?? 0;
  }

  /**
   * Asks to connect for `key` now. Returns 0 when the attempt may start, and the caller must
   * then make it; otherwise the milliseconds to wait before asking again.
   */
  permit(key: string, now: number): number {
    const schedule = this.scheduleOf(key, now);
    if (schedule === undefined) return 0;
    const retrying = schedule.failures >= 2;
    let wait = schedule.retryAt - now;
    if (wait <= 0 && retrying) wait = this.retries.waitMs(now);
    if (wait > 0) {
      if (!schedule.deferred) {
        schedule.deferred = true;
        this.counters.reconnectsDeferred++;
        this.options.onDeferred?.(key, schedule.failures, wait);
      }
      return wait;
    }
    if (retrying) this.retries.take(now);
    schedule.deferred = false;
    this.counters.reconnects++;
    return 0;
  }

  /** Records how a connection of `key` ended. */
  ended(key: string, now: number, outcome: ConnectionOutcome): void {
    if (outcome === "stable") {
      this.schedules.delete(key);
      return;
    }
    if (outcome === "neutral") return;
    const schedule = this.scheduleOf(key, now);
    const failures = (schedule?.failures ?? 0) + 1;
    // Re-inserted so that the map stays in order of the last failure.
    this.schedules.delete(key);
    this.forgetOld(now);
    this.schedules.set(key, {
      failures,
      retryAt: now + retryDelayMs(failures, this.random()),
      failedAt: now,
      deferred: false,
    });
  }

  private scheduleOf(key: string, now: number): Schedule | undefined {
    const schedule = this.schedules.get(key);
    if (schedule !== undefined && now - schedule.failedAt > FORGET_MS) {
      this.schedules.delete(key);
      return undefined;
    }
    return schedule;
  }

  /** Drops expired schedules, and the oldest ones beyond the bound (room for one more). */
  private forgetOld(now: number): void {
    for (const [key, schedule] of this.schedules) {
      if (this.schedules.size < this.options.maxPeers && now - schedule.failedAt <= FORGET_MS)
        break;
      this.schedules.delete(key);
    }
  }
}
