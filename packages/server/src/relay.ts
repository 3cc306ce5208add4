/**
 * One accepted connection and its own UDP socket connected to `--remote`.
 *
 * Hot path, synchronous both ways: UDP (a recvmmsg batch) -> a view of each datagram ->
 * `sock.send`; tunnel -> the stack's view -> the shard's run writer (copied into a run, sent
 * with one segmented send per run at the end of the task).
 */
import {
  type SocketAddress,
  type TunnelSocket,
  UDP_SOCKET_BUFFER_BYTES,
  type UdpRunWriter,
} from "fake-tcp-common";
import { type UdpBatch, UdpBatchSocket } from "fake-tcp-tun/udp";

/** Datagrams per receive call of a relay's socket (its buffer is this many MTU-sized slots). */
export const RELAY_BATCH_SIZE = 16;

/** Totals over every relay (plain numbers on the hot path). */
export interface RelayCounters {
  udpToTunnel: number;
  tunnelToUdp: number;
  /** Payload bytes of `udpToTunnel` and `tunnelToUdp`. */
  udpToTunnelBytes: number;
  tunnelToUdpBytes: number;
  /** Datagrams too large for a segment (refused by the stack, or by the socket beyond the MTU). */
  sendDrops: number;
  /** Datagrams dropped before they could be relayed (kept for the stats' shape; now 0). */
  queueDrops: number;
  /** Datagrams to the application that the UDP socket refused (e.g. after ICMP port unreachable). */
  udpErrors: number;
  /** UDP sockets open now (one per relay: each is a file descriptor). */
  udpSockets: number;
}

export function newRelayCounters(): RelayCounters {
  return {
    udpToTunnel: 0,
    tunnelToUdp: 0,
    udpToTunnelBytes: 0,
    tunnelToUdpBytes: 0,
    sendDrops: 0,
    queueDrops: 0,
    udpErrors: 0,
    udpSockets: 0,
  };
}

/** Why a relay was closed by the server itself (not by its connection ending). */
export const LOCAL_CLOSE = "local";

/**
 * A connection relayed to the UDP application. Whichever way it ends (the connection closes,
 * the server closes the relay), the UDP socket is closed, the connection is reset and
 * `onClose` runs, each exactly once.
 */
export class Relay {
  readonly openedAt = Date.now();
  readonly udp: UdpBatchSocket;
  private closed = false;

  /**
   * Binds and connects the UDP socket (synchronously: no datagram has to wait for it).
   * `maxDatagramBytes` bounds what is received from the application; larger datagrams are
   * dropped by the socket. Throws, opening nothing, for a connection that has already ended
   * (its `close` event has fired: nothing would ever close the socket).
   */
  constructor(
    readonly sock: TunnelSocket,
    remote: SocketAddress,
    private readonly totals: RelayCounters,
    runs: UdpRunWriter,
    maxDatagramBytes: number,
    private readonly onClose: (relay: Relay, cause: string) => void,
  ) {
    if (sock.closed) throw new Error("the connection has already ended");
    this.udp = UdpBatchSocket.bind({
      address: remote.family === 6 ? "::" : "0.0.0.0",
      port: 0,
      family: remote.family,
      recvBufferBytes: UDP_SOCKET_BUFFER_BYTES,
      sendBufferBytes: UDP_SOCKET_BUFFER_BYTES,
      batchSize: RELAY_BATCH_SIZE,
      maxDatagramBytes,
    });
    totals.udpSockets++;
    try {
      this.udp.connect(remote.address, remote.port);
    } catch (err) {
      this.udp.close();
      totals.udpSockets--;
      throw err;
    }
    this.udp.onReceive((batch: UdpBatch) => {
      const buffer = batch.buffer;
      for (let i = 0; i < batch.count; i++) {
        const start = batch.start(i);
        const length = batch.length(i);
        if (sock.send(buffer.subarray(start, start + length))) {
          totals.udpToTunnel++;
          totals.udpToTunnelBytes += length;
        } else totals.sendDrops++;
      }
    });
    const udp = this.udp;
    const refused = (datagrams: number): void => {
      totals.tunnelToUdp -= datagrams;
      totals.udpErrors += datagrams;
    };
    sock.onDatagram((view) => {
      // A connected socket: no destination record.
      runs.send(udp, view, undefined, refused);
      totals.tunnelToUdp++;
      totals.tunnelToUdpBytes += view.byteLength;
    });
    sock.once("close", (info) => this.close(info.cause));
  }

  /** The local address of the UDP socket (for logs). */
  udpLocal(): string | undefined {
    try {
      const a = this.udp.localAddress();
      return a.family === 6 ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    } catch {
      return undefined;
    }
  }

  /** Datagrams from the application too large for a receive slot, dropped by the socket. */
  truncated(): number {
    return this.udp.stats().truncated;
  }

  /** True once the relay has closed. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Closes the UDP socket and the connection (RST) and reports `cause`. Idempotent. */
  close(cause: string = LOCAL_CLOSE): void {
    if (this.closed) return;
    this.closed = true;
    this.totals.sendDrops += this.udp.stats().truncated;
    this.udp.close();
    this.totals.udpSockets--;
    try {
      this.sock.close();
    } finally {
      this.onClose(this, cause);
    }
  }
}
