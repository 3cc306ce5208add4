/**
 * What surrounds the peer sessions of one client shard: opening a session for a new peer
 * (if the peer table admits it), connecting to the server when the reconnect schedule allows,
 * and what a session's start and end leave behind (counters, the schedule, log lines).
 */
import {
  ConnectionLog,
  type EgressMap,
  formatAddress,
  type LogSink,
  newRelayCounters,
  oneLine,
  RateLimitedLog,
  type RelayCounters,
  type RunCounting,
  relayStats,
  resolveHostPort,
  type SocketAddress,
  shardShare,
  type Tunnel,
  type TunnelSocket,
  udpCounting,
} from "fake-tcp-common";
import type { ClientConfig } from "./cli.js";
import type { ClientFlows } from "./flow-group.js";
import { HandshakeGate } from "./handshake-gate.js";
import { PeerSession, type ReplySocket, type SessionContext } from "./peer-session.js";
import type { PeerTable } from "./peer-table.js";
import {
  connectionOutcome,
  RETRY_BURST,
  RETRY_RATE_PER_SECOND,
  ReconnectBackoff,
} from "./reconnect-backoff.js";

/** What {@link ShardSessions} works with. */
export interface ShardSessionsOptions {
  readonly config: ClientConfig;
  /** This shard's stack. */
  readonly tunnel: Tunnel;
  readonly peers: PeerTable;
  readonly handshakePacket: Buffer | undefined;
  /** Shards of the client (the shard-wide retry meter is this shard's share). */
  readonly shards: number;
  readonly logger: LogSink;
  /** The shard's flow groups (see flow-group.ts). */
  readonly flows?: ClientFlows;
  /** The counters to count in (default: new ones). */
  readonly totals?: RelayCounters;
  /** The host's egress map (automatic host rules), updated before each connection. */
  readonly egress?: Pick<EgressMap, "prepare">;
  /** The shard's bound on handshakes at once (default: a new one). */
  readonly gate?: HandshakeGate;
}

export class ShardSessions implements SessionContext {
  readonly totals: RelayCounters;
  readonly handshakePacket: Buffer | undefined;
  readonly flows: ClientFlows | undefined;
  readonly flowRate: number;
  readonly gate: HandshakeGate;
  private readonly counters = { opened: 0, closed: 0, failed: 0 };
  /** `closed` by cause (the connection's close cause, or the client's own): a handful of names. */
  private readonly closedBy: Record<string, number> = {};
  private readonly backoff: ReconnectBackoff;
  // Every line a UDP peer or the server can cause at will is rate-limited, with a summary of
  // what was suppressed: connections opened and closed (a generous budget: they are the
  // operator's record), and the rest (20 lines of each kind per 10 s).
  private readonly connectionLog: ConnectionLog;
  private readonly peerLog: RateLimitedLog;
  private readonly config: ClientConfig;
  private readonly tunnel: Tunnel;
  private readonly peers: PeerTable;
  private readonly remoteName: string;
  private readonly egress: Pick<EgressMap, "prepare"> | undefined;

  constructor(options: ShardSessionsOptions) {
    const { config, shards, logger } = options;
    this.config = config;
    this.tunnel = options.tunnel;
    this.peers = options.peers;
    this.egress = options.egress;
    this.handshakePacket = options.handshakePacket;
    this.flows = options.flows;
    this.gate = options.gate ?? new HandshakeGate();
    this.totals = options.totals ?? newRelayCounters();
    this.udpCounting = udpCounting(this.totals);
    this.flowRate = config.flowRate ?? 0;
    this.remoteName = formatAddress(config.remote.host, config.remote.port);
    this.connectionLog = new ConnectionLog(logger);
    this.peerLog = new RateLimitedLog(logger);
    this.backoff = new ReconnectBackoff({
      maxPeers: shardShare(config.maxConnections, shards),
      retryRatePerSecond: RETRY_RATE_PER_SECOND / shards,
      retryBurst: shardShare(RETRY_BURST, shards),
      now: Date.now(),
      onDeferred: (peer, failures, waitMs) =>
        this.peerLog.info({ peer, failures, waitMs }, "reconnect deferred"),
    });
  }

  /**
   * A session for a peer the table does not know, replying through `via`, or undefined when
   * the table refuses the peer (counted there). `record` and `recordKey` as for `PeerSession`.
   */
  open(
    peer: SocketAddress,
    via: ReplySocket,
    record?: Uint8Array,
    recordKey?: number,
  ): PeerSession | undefined {
    const admission = this.peers.admit(Date.now());
    if (admission !== "admitted") {
      this.peerLog.info(
        { peer: formatAddress(peer.address, peer.port), reason: admission },
        "new peer refused",
      );
      return undefined;
    }
    const session = new PeerSession(peer, via, this, record, recordKey);
    this.peers.add(session);
    return session;
  }

  /** Counts tunnel -> UDP datagrams when a UDP socket sends or refuses them. */
  readonly udpCounting: RunCounting;

  /** A UDP socket's error (rare, but a peer can cause some). */
  socketError(socket: string, err: unknown): void {
    this.peerLog.warn({ endpoint: socket, err: oneLine(err) }, "UDP socket error");
  }

  // SessionContext: what the sessions call.

  async connect(): Promise<TunnelSocket> {
    const targets = await resolveHostPort(this.config.remote, this.config.ipv4Only);
    let lastError: unknown = new Error("no address to connect to");
    // The first address of the server that completes a handshake.
    for (const target of targets) {
      try {
        await this.egress?.prepare(target.address, target.family);
        return await this.tunnel.connect(target);
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  }

  connectDelay(session: PeerSession): number {
    return this.backoff.permit(session.key, Date.now());
  }

  touch(session: PeerSession): void {
    this.peers.touch(session);
  }

  opened(session: PeerSession, sock: TunnelSocket): void {
    this.counters.opened++;
    this.connectionLog.opened(ends(session, sock));
  }

  failed(session: PeerSession, err: unknown): void {
    this.counters.failed++;
    this.peerLog.warn(
      { peer: session.key, remote: this.remoteName, err: oneLine(err) },
      "connection failed",
    );
  }

  closed(session: PeerSession, cause: string): void {
    this.peers.forget(session);
    const now = Date.now();
    const established = session.establishedAt;
    const openMs = established === undefined ? undefined : now - established;
    this.backoff.ended(session.key, now, connectionOutcome(cause, openMs, session.fromServer));
    const sock = session.socket;
    if (!sock) return; // never opened: "connection failed" said it all
    this.counters.closed++;
    this.closedBy[cause] = (this.closedBy[cause] ?? 0) + 1;
    this.connectionLog.closed(ends(session, sock), cause, session.openedAt, now);
  }

  /** The shard's stats; `truncated`: datagrams its UDP sockets cut off (see `relayStats`). */
  stats(truncated: number): Record<string, unknown> {
    return {
      ...relayStats(
        [
          { connections: this.peers.size },
          this.counters,
          this.backoff.counters,
          this.peers.refusals,
          this.gate.counters,
        ],
        this.totals,
        truncated,
      ),
      closedBy: { ...this.closedBy },
    };
  }

  /** Resets every session (at stop) and logs what the rate limits suppressed until now. */
  closeAll(): void {
    this.gate.clear();
    this.peers.closeAll("local");
    this.connectionLog.close();
    this.peerLog.close();
  }
}

/** A session's connection in the log: the UDP peer, and the server it is connected to. */
function ends(session: PeerSession, sock: TunnelSocket) {
  return { peer: session.key, sock, remote: formatAddress(sock.remoteAddress, sock.remotePort) };
}
