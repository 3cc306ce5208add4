/**
 * The client's table of UDP peers: an LRU cache with the idle timeout as TTL and
 * `--max-connections` as its size bound. A peer evicted by the bound, or idle past the
 * timeout, has its connection closed (RST).
 */
import { LRUCache } from "lru-cache";
import type { PeerSession } from "./peer-session.js";

/** Causes logged for sessions the table itself ends. */
export const EVICTED = "evicted";
export const IDLE_TIMEOUT = "idle-timeout";

export class ConnectionTable {
  private readonly cache: LRUCache<string, PeerSession>;
  private readonly purgeTimer: NodeJS.Timeout;
  /**
   * Traffic refreshes a session's age at most this often: the cache's own refresh (a keyed
   * lookup reading the high-resolution clock) per datagram was a visible share of the hot
   * path, and a tenth of the idle timeout (at most a second) is far finer than it needs.
   */
  private readonly touchIntervalMs: number;

  constructor(maxConnections: number, idleTimeoutMs: number) {
    this.touchIntervalMs = Math.min(1_000, idleTimeoutMs / 10);
    this.cache = new LRUCache<string, PeerSession>({
      max: maxConnections,
      ttl: idleTimeoutMs,
      updateAgeOnGet: true,
      // disposeAfter runs once the entry is gone, so closing may call back into the table.
      disposeAfter: (session, _key, reason) => {
        if (reason === "evict") session.close(EVICTED);
        else if (reason === "expire") session.close(IDLE_TIMEOUT);
      },
    });
    // Expired entries are otherwise only noticed when looked up; sweep them regularly.
    this.purgeTimer = setInterval(
      () => this.cache.purgeStale(),
      Math.min(1_000, idleTimeoutMs),
    ).unref();
  }

  /** The session of `key`, refreshing its age. */
  get(key: string): PeerSession | undefined {
    return this.cache.get(key);
  }

  /** Adds a session; may evict the least recently used one (which is closed). */
  add(session: PeerSession): void {
    this.cache.set(session.key, session);
  }

  /** Refreshes a session's age on traffic (see `touchIntervalMs`). */
  touch(session: PeerSession): void {
    const now = Date.now();
    if (now - session.touchedAt < this.touchIntervalMs) return;
    session.touchedAt = now;
    this.cache.get(session.key);
  }

  /** Forgets a session that ended by itself, if it is still the one stored for its key. */
  forget(session: PeerSession): void {
    if (this.cache.peek(session.key) === session) this.cache.delete(session.key);
  }

  get size(): number {
    return this.cache.size;
  }

  /** Every session, most recently used first. */
  sessions(): PeerSession[] {
    return [...this.cache.values()];
  }

  /** Closes every session with `cause` and empties the table. */
  closeAll(cause: string): void {
    clearInterval(this.purgeTimer);
    const sessions = this.sessions();
    this.cache.clear();
    for (const session of sessions) session.close(cause);
  }
}
