/**
 * One accepted connection and its own UDP socket connected to `--remote`.
 *
 * Hot path: UDP -> `sock.send` synchronously; tunnel -> copy of the view -> `udp.send` (the
 * view is only valid during the callback and dgram's send is asynchronous).
 */
import { createSocket, type Socket } from "node:dgram";
import { type SocketAddress, type TunnelSocket, UDP_SOCKET_BUFFER_BYTES } from "fake-tcp-common";

/** Datagrams held from the tunnel while the UDP socket is still connecting. */
export const MAX_PENDING_DATAGRAMS = 64;

/** Totals over every relay (plain numbers on the hot path). */
export interface RelayCounters {
  udpToTunnel: number;
  tunnelToUdp: number;
  /** Datagrams the stack refused (e.g. larger than the MTU). */
  sendDrops: number;
  /** Datagrams dropped while the UDP socket was connecting and its queue was full. */
  queueDrops: number;
  /** UDP socket errors (e.g. ICMP port unreachable from the application). */
  udpErrors: number;
}

export function newRelayCounters(): RelayCounters {
  return { udpToTunnel: 0, tunnelToUdp: 0, sendDrops: 0, queueDrops: 0, udpErrors: 0 };
}

/** A connection relayed to the UDP application. */
export class Relay {
  readonly openedAt = Date.now();
  readonly udp: Socket;
  private pending: Buffer[] | null = [];
  private closed = false;

  constructor(
    readonly sock: TunnelSocket,
    remote: SocketAddress,
    totals: RelayCounters,
    onClose: (relay: Relay, cause: string) => void,
  ) {
    this.udp = createSocket({
      type: remote.family === 6 ? "udp6" : "udp4",
      recvBufferSize: UDP_SOCKET_BUFFER_BYTES,
      sendBufferSize: UDP_SOCKET_BUFFER_BYTES,
    });
    this.udp.on("error", () => {
      // A connected UDP socket reports ICMP errors (application not listening) here; the
      // datagram is lost like any other, the connection stays.
      totals.udpErrors++;
    });
    this.udp.on("message", (datagram) => {
      if (sock.send(datagram)) totals.udpToTunnel++;
      else totals.sendDrops++;
    });
    sock.onDatagram((view) => {
      const pending = this.pending;
      if (pending === null) {
        this.udp.send(Buffer.from(view));
        totals.tunnelToUdp++;
      } else if (pending.length < MAX_PENDING_DATAGRAMS) {
        pending.push(Buffer.from(view));
      } else {
        totals.queueDrops++;
      }
    });
    sock.once("close", (info) => {
      this.close();
      onClose(this, info.cause);
    });
    this.udp.connect(remote.port, remote.address, () => {
      const pending = this.pending ?? [];
      this.pending = null;
      if (this.closed) return;
      for (const datagram of pending) {
        this.udp.send(datagram);
        totals.tunnelToUdp++;
      }
    });
  }

  /** The local address of the UDP socket, once connected (for logs). */
  udpLocal(): string | undefined {
    try {
      const a = this.udp.address();
      return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    } catch {
      return undefined;
    }
  }

  /** Closes the UDP socket and the connection (RST). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.udp.close();
    this.sock.close();
  }
}
