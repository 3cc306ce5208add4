/**
 * The client's table of UDP peers: an LRU cache with the idle timeout as TTL and
 * `--max-connections` as its size bound. A peer idle past the timeout, or pushed out to make
 * room, has its connection closed (RST).
 *
 * New peers are admitted with care, since a UDP source address proves nothing: anyone who can
 * reach `--local` can send from as many (spoofed) addresses as they like, and each new peer
 * costs a name lookup and a connection to the server. So new peers are metered by a token
 * bucket (`--new-peer-rate`), and a full table makes room only by resetting a peer that has
 * been silent for a while ({@link EVICTABLE_IDLE_MS}): an active peer is never pushed out by a
 * newcomer, which is refused instead. Refusals are counted.
 */
import { LRUCache } from "lru-cache";
import type { PeerSession } from "./peer-session.js";
import { TokenBucket } from "./token-bucket.js";

/** Causes logged for sessions the table itself ends. */
export const EVICTED = "evicted";
export const IDLE_TIMEOUT = "idle-timeout";

/**
 * A full table resets its least recently active peer for a newcomer only when that peer has
 * been silent this long (or half the idle timeout, if that is shorter).
 */
export const EVICTABLE_IDLE_MS = 30_000;

/** Whether a new peer may have a session: yes, or why not. */
export type Admission = "admitted" | "rate" | "full";

/** Datagrams of new peers that the table refused, by reason. */
export interface RefusalCounters {
  /** The new-peer rate was exceeded. */
  peersRefusedRate: number;
  /** The table was full of peers active within {@link EVICTABLE_IDLE_MS}. */
  peersRefusedFull: number;
}

/** Bounds of a {@link ConnectionTable}. */
export interface ConnectionTableOptions {
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
  /** New peers admitted per second, and at once. */
  readonly newPeerRate: number;
  readonly newPeerBurst: number;
  /** The clock's time at creation (ms). */
  readonly now: number;
}

export class ConnectionTable {
  readonly refusals: RefusalCounters = { peersRefusedRate: 0, peersRefusedFull: 0 };
  private readonly cache: LRUCache<string, PeerSession>;
  private readonly purgeTimer: NodeJS.Timeout;
  private readonly maxConnections: number;
  private readonly evictableIdleMs: number;
  private readonly newPeers: TokenBucket;
  /**
   * Traffic refreshes a session's age at most this often: the cache's own refresh (a keyed
   * lookup reading the high-resolution clock) per datagram was a visible share of the hot
   * path, and a tenth of the idle timeout (at most a second) is far finer than it needs.
   */
  private readonly touchIntervalMs: number;

  constructor(options: ConnectionTableOptions) {
    const { maxConnections, idleTimeoutMs } = options;
    this.maxConnections = maxConnections;
    this.touchIntervalMs = Math.min(1_000, idleTimeoutMs / 10);
    this.evictableIdleMs = Math.min(EVICTABLE_IDLE_MS, idleTimeoutMs / 2);
    this.newPeers = new TokenBucket(options.newPeerRate, options.newPeerBurst, options.now);
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

  /** The session of `key`, refreshing its age (the peer is active: it is being looked up). */
  get(key: string, now = Date.now()): PeerSession | undefined {
    const session = this.cache.get(key);
    if (session !== undefined) session.touchedAt = now;
    return session;
  }

  /**
   * Whether a new peer may have a session now (counted when not). When the table is full,
   * `add` will then reset the least recently active peer, which has been silent long enough.
   */
  admit(now: number): Admission {
    if (this.cache.size >= this.maxConnections) {
      const oldest = this.cache.rvalues().next().value;
      if (oldest !== undefined && now - oldest.touchedAt < this.evictableIdleMs) {
        this.refusals.peersRefusedFull++;
        return "full";
      }
    }
    if (!this.newPeers.take(now)) {
      this.refusals.peersRefusedRate++;
      return "rate";
    }
    return "admitted";
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
