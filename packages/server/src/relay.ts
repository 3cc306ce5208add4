/**
 * One accepted connection and its own UDP socket connected to `--remote`.
 *
 * Hot path, synchronous both ways: UDP (a recvmmsg batch) -> a view of each datagram ->
 * `sock.send`, the stack's run written at the end of the batch; tunnel -> the stack's view ->
 * the shard's run writer (copied into a run, sent with one segmented send per run at the end
 * of the tunnel's batch).
 */
import {
  newRelayCounters,
  type RelayCounters,
  type SocketAddress,
  sendToTunnel,
  type TunnelSocket,
  UDP_SOCKET_BUFFER_BYTES,
  type UdpRunWriter,
  udpCounting,
} from "fake-tcp-common";
import { type UdpBatch, UdpBatchSocket, type UdpReceiveArea } from "fake-tcp-tun/udp";

/**
 * Datagrams per receive call of a relay's socket: the shard's receive area (shared by all its
 * relays, see `UdpReceiveArea`) has this many MTU-sized slots.
 */
export const RELAY_BATCH_SIZE = 16;

/** The relay counters, and the UDP sockets open now (one per relay: each is a file descriptor). */
export interface ServerCounters extends RelayCounters {
  udpSockets: number;
}

export function newServerCounters(): ServerCounters {
  return { ...newRelayCounters(), udpSockets: 0 };
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
   * Binds and connects the UDP socket (synchronously: no datagram has to wait for it). It
   * receives into `receiveArea` (the shard's, shared by its relays), whose slot size bounds
   * what is taken from the application; larger datagrams are dropped by the socket. Throws, opening nothing, for a connection that has already ended
   * (its `close` event has fired: nothing would ever close the socket).
   */
  constructor(
    readonly sock: TunnelSocket,
    remote: SocketAddress,
    private readonly totals: ServerCounters,
    runs: UdpRunWriter,
    flushTunnel: () => void,
    receiveArea: UdpReceiveArea,
    private readonly onClose: (relay: Relay, cause: string) => void,
  ) {
    if (sock.closed) throw new Error("the connection has already ended");
    this.udp = UdpBatchSocket.bind({
      address: remote.family === 6 ? "::" : "0.0.0.0",
      port: 0,
      family: remote.family,
      recvBufferBytes: UDP_SOCKET_BUFFER_BYTES,
      sendBufferBytes: UDP_SOCKET_BUFFER_BYTES,
      receiveArea,
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
        sendToTunnel(sock, buffer.subarray(start, start + batch.length(i)), totals);
      }
      flushTunnel();
    });
    const udp = this.udp;
    const counting = udpCounting(totals);
    // A connected socket: no destination record.
    sock.onDatagram((view) => runs.send(udp, view, undefined, counting));
    sock.once("close", (info) => this.close(info.cause));
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
