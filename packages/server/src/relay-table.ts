/**
 * The relays of one server shard: one per accepted connection, each with its own UDP socket.
 *
 * Every resource a connection holds is released on every path that ends it, and counted: a
 * connection that ended before it was accepted (reset right after its handshake) gets no relay
 * and no socket; a relay leaves the table whichever way it closes; the stats say how many
 * relays and UDP sockets are open, so that a leak shows.
 */
import {
  ConnectionLog,
  formatAddress,
  type LogSink,
  oneLine,
  RateLimitedLog,
  relayStats,
  type SocketAddress,
  type TunnelSocket,
  type UdpRunWriter,
} from "fake-tcp-common";
import { UdpReceiveArea } from "fake-tcp-tun/udp";
import { newServerCounters, RELAY_BATCH_SIZE, Relay } from "./relay.js";

/** What a {@link RelayTable} needs. */
export interface RelayTableOptions {
  /** The UDP application every connection is relayed to. */
  readonly remote: SocketAddress;
  readonly runs: UdpRunWriter;
  /** Writes the stack's run: called at the end of each batch a relay sends into the tunnel. */
  readonly flushTunnel: () => void;
  /** Largest datagram taken from the application (the MTU). */
  readonly maxDatagramBytes: number;
  /** Sent as the first datagram of every connection. */
  readonly handshakePacket?: Uint8Array;
  /** Receives the per-connection lines (rate-limited here: any client can cause them). */
  readonly logger: LogSink;
}

/** The relays of a shard and their counters. */
export class RelayTable {
  readonly totals = newServerCounters();
  private readonly relays = new Set<Relay>();
  private readonly counters = { opened: 0, closed: 0, endedBeforeAccept: 0 };
  /** `closed` by cause (the connection's close cause, or `local`): a handful of names. */
  private readonly closedBy: Record<string, number> = {};
  /** Per-connection lines, and warnings: separate budgets. */
  private readonly connectionLog: ConnectionLog;
  private readonly warnLog: RateLimitedLog;
  private readonly remoteName: string;
  /**
   * One set of receive buffers for every relay socket of the shard (they all run on its
   * thread): per-socket buffers would cost ~28 KiB per connection.
   */
  private readonly receiveArea: UdpReceiveArea;

  constructor(private readonly options: RelayTableOptions) {
    this.receiveArea = new UdpReceiveArea(RELAY_BATCH_SIZE, options.maxDatagramBytes);
    this.connectionLog = new ConnectionLog(options.logger);
    this.warnLog = new RateLimitedLog(options.logger);
    this.remoteName = formatAddress(options.remote.address, options.remote.port);
  }

  /**
   * Relays an accepted connection. A connection that has already ended is only counted; one
   * for which no UDP socket can be opened is reset. Returns the relay, or null.
   */
  accept(sock: TunnelSocket): Relay | null {
    if (sock.closed) {
      // Reset between its handshake and this accept: its close event has fired already.
      this.counters.endedBeforeAccept++;
      return null;
    }
    let relay: Relay;
    try {
      relay = new Relay(
        sock,
        this.options.remote,
        this.totals,
        this.options.runs,
        this.options.flushTunnel,
        this.receiveArea,
        (ended, cause) => this.closed(ended, cause),
      );
    } catch (err) {
      // No UDP socket for this connection (e.g. out of file descriptors): refuse it.
      this.totals.udpErrors++;
      this.warnLog.warn(
        { peer: formatAddress(sock.remoteAddress, sock.remotePort), err: oneLine(err) },
        "cannot open a UDP socket for the connection, resetting it",
      );
      sock.close();
      return null;
    }
    this.relays.add(relay);
    this.counters.opened++;
    this.connectionLog.opened(this.ends(sock));
    if (this.options.handshakePacket) sock.send(this.options.handshakePacket);
    return relay;
  }

  /** Relays open now. */
  get size(): number {
    return this.relays.size;
  }

  /** The shard's counters. */
  stats(): Record<string, unknown> {
    let truncated = 0;
    for (const relay of this.relays) truncated += relay.truncated();
    const open = { connections: this.relays.size, relays: this.relays.size };
    return {
      ...relayStats([open, this.counters], this.totals, truncated),
      closedBy: { ...this.closedBy },
    };
  }

  /** Closes every relay (RST on each connection) and logs what the rate limit held back. */
  closeAll(): void {
    for (const relay of [...this.relays]) relay.close();
    this.connectionLog.close();
    this.warnLog.close();
  }

  private closed(relay: Relay, cause: string): void {
    if (!this.relays.delete(relay)) return;
    this.counters.closed++;
    this.closedBy[cause] = (this.closedBy[cause] ?? 0) + 1;
    this.connectionLog.closed(this.ends(relay.sock), cause, relay.openedAt);
  }

  /** A relay's connection in the log: the client, and the application it is relayed to. */
  private ends(sock: TunnelSocket) {
    return {
      peer: formatAddress(sock.remoteAddress, sock.remotePort),
      sock,
      remote: this.remoteName,
    };
  }
}
