/** Stack configuration: every knob, its default, and why it has that default. */
import type { DeviceQueue } from "../device.js";
import { KEY_LENGTH } from "../keyed/tunnel-key.js";
import { MAX_WINDOW_SCALE } from "../wire/linux-syn.js";

/** A log sink for the stack's rare, rate-limited messages (oversize drops, handler errors). */
export type StackLogger = (level: "warn" | "info" | "debug", message: string) => void;

export interface StackOptions {
  /** Device queues the stack reads and writes (at least one). */
  queues: DeviceQueue[];
  /** The stack's own IPv4 address (source of what it sends). Needed to connect over IPv4. */
  local4?: string;
  /** The stack's own IPv6 address. Needed to connect over IPv6. */
  local6?: string;
  /** SYN / SYN-ACK transmissions before giving up (phantun: 3). */
  handshakeAttempts?: number;
  /** Wait per handshake attempt, in ms (phantun: 1000). */
  handshakeTimeoutMs?: number;
  /**
   * Most connections in any state (client handshakes included). A listener keeps no state for
   * handshakes in progress (SYN cookies), so only completed handshakes count on the server
   * side. When the table is full, a new client's completed handshake evicts an accepted
   * connection that never carried a datagram (5 s after its handshake) or, failing that, the
   * one idle longest (30 s or more); only when none qualifies is it refused. `connect()`
   * fails with ENOBUFS when the table is full. Default 65536.
   */
  maxConnections?: number;
  /**
   * Most accepted connections from one source: an IPv4 address, or an IPv6 /64 (one
   * subscriber's prefix). Further handshakes from it are refused with RST. Default: a quarter
   * of `maxConnections` (16384 of 65536; 1024 of the programs' 4096). A carrier-grade NAT
   * puts many users behind one IPv4 address, so a small per-address cap would lock out
   * legitimate users who happen to share one; a quarter still means that filling the table
   * takes at least four sources, and connections that fill it without carrying data are
   * evicted anyway (see `maxConnections`).
   */
  maxConnectionsPerSource?: number;
  /** Most established connections waiting for `accept()`. Default 1024. */
  acceptBacklog?: number;
  /** Close a connection after this long without traffic either way (phantun: 180 s). */
  idleTimeoutMs?: number;
  /** Send a pure ACK once received data has gone unacknowledged this long. Default 1000 ms. */
  ackDelayMs?: number;
  /** ...or once this many received bytes are unacknowledged. Default 4 MiB. */
  ackBytes?: number;
  /**
   * On queues that offer it (`DeviceQueue.segmentationOffload`), write consecutive datagrams
   * of a socket as one run that the device segments. Default true. The segments are the same
   * as single writes make, except that the kernel numbers the IPv4 ID of a run's segments
   * 0, 1, 2... where single packets keep ID 0.
   */
  segmentationOffload?: boolean;
  /**
   * After this long without receiving anything, send a keepalive (a plain pure ACK, which
   * keeps NAT mappings and conntrack entries alive) or, to a peer of ours, a probe; 0
   * disables both (the default). Both are harmless to a phantun peer.
   */
  keepaliveIntervalMs?: number;
  /**
   * Unanswered probes in a row after which a peer of ours (`Socket.peerIsOurs`) is declared
   * dead; a phantun peer is never probed, so never declared dead. An unanswered probe is
   * repeated every half interval, so silence is detected after about
   * `keepaliveIntervalMs * (1 + deadPeerProbes / 2)`. Also the probes of the fast check after
   * a doubtful RST (see `verifyIntervalMs`). Default 3.
   */
  deadPeerProbes?: number;
  /**
   * Minimum gap between two answers to a peer's probes on one connection. Below
   * `verifyIntervalMs`, so that every probe of the fast check can be answered. Default 200 ms.
   */
  probeAnswerIntervalMs?: number;
  /**
   * The fast check a peer of ours gets after an RST whose seq is in the window but not exact:
   * `deadPeerProbes` probes this far apart; the connection closes only if none is answered
   * and no new data arrives meanwhile (so after about 0.9 s of silence by default). Default
   * 300 ms.
   */
  verifyIntervalMs?: number;
  /**
   * Challenge ACKs (answers to doubtful RSTs and to segments outside the windows): minimum
   * gap on one connection. Default 250 ms.
   */
  challengeIntervalMs?: number;
  /**
   * ...and the stack-wide budget per second (each second's budget is drawn at random
   * between this and 1.5 x this, so that it cannot serve as a side channel). Default 1000.
   */
  challengeRatePerSecond?: number;
  /** RST replies to unknown tuples: sustained rate per second (token bucket). Default 1000. */
  rstRatePerSecond?: number;
  /** ...and burst size. Default 200. */
  rstBurst?: number;
  /** Datagrams buffered per socket while nobody consumes them (async iterator). Default 1024. */
  receiveQueueLimit?: number;
  /** Period of the timer sweep, in ms (handshake retries, acks, keepalive, idle). Default 100. */
  tickMs?: number;
  /** Where rate-limited messages go (default: nowhere). */
  log?: StackLogger;
  /**
   * Shard of a sharded program (one stack per TUN queue, the device steering a flow's packets
   * to queue `((sport + dport) mod 2^16) % count`, see `steeredQueue`): `connect()` then picks
   * only local ports whose replies come back to this stack's queue. Default: one shard (any
   * port).
   */
  portShard?: PortShard;
  /**
   * The source ports `connect()` picks from: `count` ports from `first`. Default Linux's
   * default ephemeral range, 32768..60999. A client whose host rewrites the stack's segments
   * statelessly uses a range the host's own sockets do not take theirs from.
   */
  sourcePorts?: PortRange;
  /**
   * Keyed mode: the 32-byte tunnel key, shared by both ends (see docs/wire-protocol.md,
   * "Keyed mode"). With a key, the client's SYN carries a token made with it and looks like
   * Linux's, and the server answers only such SYNs; anything else, and any segment for no
   * connection, gets no answer at all (no SYN-ACK, no RST). An RST never closes a keyed
   * connection by itself: it starts the fast check (`verifyIntervalMs`). A keyed stack talks
   * only to keyed peers with the same key: phantun peers and unkeyed stacks are refused.
   */
  key?: Uint8Array;
  /**
   * Keyed mode: the window-scale shift the SYN and SYN-ACK announce, as the host's kernel would
   * (see `linuxWindowScale`). Default 7 (Linux's default receive buffer limit, 6 MiB).
   */
  synWindowScale?: number;
  /**
   * TTL (IPv4) and hop limit (IPv6) of everything the stack sends. Default 64, what phantun
   * and Linux send. The programs' keyed mode sets 65: their packets leave the TUN through the
   * host's forwarding, which takes one off, so that on the wire they carry the 64 of packets
   * the host itself sends.
   */
  ttl?: number;
  /**
   * Keyed mode: SYN tokens the listener remembers (its replay cache, see replay-cache.ts).
   * Enough for this many handshakes in about three minutes. Default 65536.
   */
  replayCacheSize?: number;
  /**
   * Keyed mode: the replay cache's memory (`ReplayCache.memory(capacity)`), shared by the
   * stacks of a sharded program (a replayed SYN from another port may reach another shard).
   * Default: a cache of this stack's own, of `replayCacheSize` entries.
   */
  replayCacheMemory?: SharedArrayBuffer;
}

/** This stack's shard: `index` of `count` (see {@link StackOptions.portShard}). */
export interface PortShard {
  readonly index: number;
  readonly count: number;
}

/** A range of ports: `count` of them from `first`. */
export interface PortRange {
  readonly first: number;
  readonly count: number;
}

/** Linux's default ephemeral port range (net.ipv4.ip_local_port_range = 32768 60999). */
export const EPHEMERAL_PORTS: PortRange = { first: 32768, count: 61000 - 32768 };

/** Options with every default applied. */
type OptionalOptions = "local4" | "local6" | "log" | "key" | "replayCacheMemory";
export type ResolvedOptions = Required<Omit<StackOptions, OptionalOptions>> &
  Pick<StackOptions, OptionalOptions>;

/** Most shards: more would leave too few ports per shard in the ephemeral range. */
export const MAX_PORT_SHARDS = 1024;

function positiveInt(name: string, value: number, min = 1): number {
  if (!Number.isInteger(value) || value < min)
    throw new RangeError(`stack option ${name} must be an integer >= ${min}, got ${value}`);
  return value;
}

/** Applies defaults and validates. Throws RangeError/TypeError on nonsense configuration. */
export function resolveOptions(o: StackOptions): ResolvedOptions {
  if (!Array.isArray(o.queues) || o.queues.length === 0)
    throw new TypeError("stack option queues must be a non-empty array of device queues");
  const r: ResolvedOptions = {
    queues: o.queues,
    local4: o.local4,
    local6: o.local6,
    log: o.log,
    handshakeAttempts: o.handshakeAttempts ?? 3,
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? 1000,
    maxConnections: o.maxConnections ?? 65536,
    maxConnectionsPerSource:
      o.maxConnectionsPerSource ?? Math.max(1, Math.ceil((o.maxConnections ?? 65536) / 4)),
    acceptBacklog: o.acceptBacklog ?? 1024,
    idleTimeoutMs: o.idleTimeoutMs ?? 180_000,
    ackDelayMs: o.ackDelayMs ?? 1000,
    ackBytes: o.ackBytes ?? 4 * 1024 * 1024,
    segmentationOffload: o.segmentationOffload ?? true,
    keepaliveIntervalMs: o.keepaliveIntervalMs ?? 0,
    deadPeerProbes: o.deadPeerProbes ?? 3,
    probeAnswerIntervalMs: o.probeAnswerIntervalMs ?? 200,
    verifyIntervalMs: o.verifyIntervalMs ?? 300,
    challengeIntervalMs: o.challengeIntervalMs ?? 250,
    challengeRatePerSecond: o.challengeRatePerSecond ?? 1000,
    rstRatePerSecond: o.rstRatePerSecond ?? 1000,
    rstBurst: o.rstBurst ?? 200,
    receiveQueueLimit: o.receiveQueueLimit ?? 1024,
    tickMs: o.tickMs ?? 100,
    portShard: o.portShard ?? { index: 0, count: 1 },
    sourcePorts: o.sourcePorts ?? EPHEMERAL_PORTS,
    key: o.key,
    synWindowScale: o.synWindowScale ?? 7,
    replayCacheSize: o.replayCacheSize ?? 65536,
    replayCacheMemory: o.replayCacheMemory,
    ttl: o.ttl ?? 64,
  };
  positiveInt("ttl", r.ttl);
  if (r.ttl > 255) throw new RangeError(`stack option ttl must be at most 255, got ${r.ttl}`);
  if (r.key !== undefined && (!(r.key instanceof Uint8Array) || r.key.length !== KEY_LENGTH))
    throw new RangeError(`stack option key must be ${KEY_LENGTH} bytes, got ${r.key?.length}`);
  positiveInt("synWindowScale", r.synWindowScale, 0);
  if (r.synWindowScale > MAX_WINDOW_SCALE)
    throw new RangeError(
      `stack option synWindowScale must be at most ${MAX_WINDOW_SCALE}, got ${r.synWindowScale}`,
    );
  positiveInt("replayCacheSize", r.replayCacheSize);
  positiveInt("handshakeAttempts", r.handshakeAttempts);
  positiveInt("handshakeTimeoutMs", r.handshakeTimeoutMs);
  positiveInt("maxConnections", r.maxConnections);
  positiveInt("maxConnectionsPerSource", r.maxConnectionsPerSource);
  positiveInt("acceptBacklog", r.acceptBacklog);
  positiveInt("idleTimeoutMs", r.idleTimeoutMs);
  positiveInt("ackDelayMs", r.ackDelayMs);
  positiveInt("ackBytes", r.ackBytes);
  positiveInt("keepaliveIntervalMs", r.keepaliveIntervalMs, 0);
  positiveInt("deadPeerProbes", r.deadPeerProbes);
  positiveInt("probeAnswerIntervalMs", r.probeAnswerIntervalMs, 0);
  positiveInt("verifyIntervalMs", r.verifyIntervalMs);
  positiveInt("challengeIntervalMs", r.challengeIntervalMs, 0);
  positiveInt("challengeRatePerSecond", r.challengeRatePerSecond, 0);
  positiveInt("rstRatePerSecond", r.rstRatePerSecond, 0);
  positiveInt("rstBurst", r.rstBurst, 0);
  positiveInt("receiveQueueLimit", r.receiveQueueLimit);
  positiveInt("tickMs", r.tickMs);
  positiveInt("portShard.count", r.portShard.count);
  if (r.portShard.count > MAX_PORT_SHARDS)
    throw new RangeError(
      `stack option portShard.count must be at most ${MAX_PORT_SHARDS}, got ${r.portShard.count}`,
    );
  positiveInt("portShard.index", r.portShard.index, 0);
  if (r.portShard.index >= r.portShard.count)
    throw new RangeError(
      `stack option portShard.index must be below portShard.count (${r.portShard.count}), got ${r.portShard.index}`,
    );
  positiveInt("sourcePorts.first", r.sourcePorts.first);
  positiveInt("sourcePorts.count", r.sourcePorts.count);
  if (r.sourcePorts.first + r.sourcePorts.count > 65536)
    throw new RangeError(
      `stack option sourcePorts must end at port 65535 at most, got ${r.sourcePorts.first}+${r.sourcePorts.count}`,
    );
  return r;
}
