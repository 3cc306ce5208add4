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

  constructor(maxConnections: number, idleTimeoutMs: number) {
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

  /** Refreshes a session's age (traffic in the tunnel -> UDP direction). */
  touch(session: PeerSession): void {
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
