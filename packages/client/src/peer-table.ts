/**
 * The UDP peers of one client shard and their sessions: finding the session a received
 * datagram belongs to, admitting new peers, bounding the table and aging it.
 *
 * Finding: by the numeric key of the datagram's source address record (`UdpBatch.key`), so
 * no string is made per datagram; the key is exact for IPv4 and a hash for IPv6, so the
 * record's bytes are compared too. Consecutive datagrams of one peer in a batch share one
 * lookup. A session whose key another peer holds (an IPv6 hash collision), and the sessions
 * of node:dgram sockets (no records), are found by name (`ip:port`).
 *
 * Bound and age: an LRU cache by name with the idle timeout as TTL and `--max-connections` as
 * its size. A peer idle past the timeout, or pushed out to make room, has its connection
 * closed (RST).
 *
 * Admission: a UDP source address proves nothing. Anyone who can reach `--local` can send
 * from as many (spoofed) addresses as they like, and each new peer costs a name lookup and a
 * connection to the server. So new peers are metered by a token bucket (`--new-peer-rate`),
 * and a full table makes room only by resetting a peer that has been silent for a while
 * ({@link EVICTABLE_IDLE_MS}): an active peer is never pushed out by a newcomer, which is
 * refused instead. Refusals are counted.
 */
import { formatAddress, TokenBucket } from "fake-tcp-common";
import type { UdpBatch } from "fake-tcp-tun/udp";
import { LRUCache } from "lru-cache";
import type { PeerSession } from "./peer-session.js";

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

/** What the table reads of a received batch. */
export type DatagramSources = Pick<UdpBatch, "key" | "sameSource" | "address" | "port">;

/** Bounds of a {@link PeerTable}. */
export interface PeerTableOptions {
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
  /** New peers admitted per second, and at once. */
  readonly newPeerRate: number;
  readonly newPeerBurst: number;
  /** The clock's time at creation (ms). */
  readonly now: number;
}

export class PeerTable {
  readonly refusals: RefusalCounters = { peersRefusedRate: 0, peersRefusedFull: 0 };
  /** Every session by name: the authority on what the table holds (bound, age, order). */
  private readonly byName: LRUCache<string, PeerSession>;
  /** Sessions with an address record by its numeric key: the lookup per datagram. */
  private readonly byKey = new Map<number, PeerSession>();
  /** The session {@link find} returned last (for the next datagram of the same batch). */
  private last: PeerSession | undefined;
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

  constructor(options: PeerTableOptions) {
    const { maxConnections, idleTimeoutMs } = options;
    this.maxConnections = maxConnections;
    this.touchIntervalMs = Math.min(1_000, idleTimeoutMs / 10);
    this.evictableIdleMs = Math.min(EVICTABLE_IDLE_MS, idleTimeoutMs / 2);
    this.newPeers = new TokenBucket(options.newPeerRate, options.newPeerBurst, options.now);
    this.byName = new LRUCache<string, PeerSession>({
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
      () => this.byName.purgeStale(),
      Math.min(1_000, idleTimeoutMs),
    ).unref();
  }

  /**
   * The session of the source of datagram `i` of `batch`, or undefined for a peer the table
   * does not know. Allocates nothing for a known peer.
   */
  find(batch: DatagramSources, i: number): PeerSession | undefined {
    const key = batch.key(i);
    // A batch is mostly runs from one peer: those share one lookup (and one touch).
    const last = this.last;
    if (i > 0 && last !== undefined && last.recordKey === key && this.isSourceOf(last, batch, i))
      return last;
    const known = this.byKey.get(key);
    if (known !== undefined && this.isSourceOf(known, batch, i)) {
      this.touch(known);
      this.last = known;
      return known;
    }
    const session = this.get(formatAddress(batch.address(i), batch.port(i)));
    // Found by name: the key was held by another peer; it is this one's now.
    if (session?.record !== undefined) this.byKey.set(key, session);
    this.last = session;
    return session;
  }

  /** The session of `name` (`ip:port`), refreshing its age (the peer is active). */
  get(name: string, now = Date.now()): PeerSession | undefined {
    const session = this.byName.get(name);
    if (session !== undefined) session.touchedAt = now;
    return session;
  }

  /**
   * Whether a new peer may have a session now (counted when not). When the table is full,
   * `add` will then reset the least recently active peer, which has been silent long enough.
   */
  admit(now: number): Admission {
    if (this.byName.size >= this.maxConnections) {
      const oldest = this.byName.rvalues().next().value;
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
    this.byName.set(session.key, session);
    if (session.record !== undefined) this.byKey.set(session.recordKey, session);
  }

  /** Refreshes a session's age on traffic (see `touchIntervalMs`). */
  touch(session: PeerSession): void {
    const now = Date.now();
    if (now - session.touchedAt < this.touchIntervalMs) return;
    session.touchedAt = now;
    this.byName.get(session.key);
  }

  /** Forgets a session that ended, wherever it is still stored. */
  forget(session: PeerSession): void {
    if (this.byName.peek(session.key) === session) this.byName.delete(session.key);
    if (this.byKey.get(session.recordKey) === session) this.byKey.delete(session.recordKey);
    if (this.last === session) this.last = undefined;
  }

  get size(): number {
    return this.byName.size;
  }

  /** Every session, most recently used first. */
  sessions(): PeerSession[] {
    return [...this.byName.values()];
  }

  /** Closes every session with `cause` and empties the table. */
  closeAll(cause: string): void {
    clearInterval(this.purgeTimer);
    const sessions = this.sessions();
    this.byName.clear();
    this.byKey.clear();
    this.last = undefined;
    for (const session of sessions) session.close(cause);
  }

  private isSourceOf(session: PeerSession, batch: DatagramSources, i: number): boolean {
    return !session.isClosed && session.record !== undefined && batch.sameSource(i, session.record);
  }
}
