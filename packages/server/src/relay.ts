/**
 * One accepted connection and its own UDP socket connected to `--remote`.
 *
 * Hot path, synchronous both ways: UDP (a recvmmsg batch) -> a view of each datagram ->
 * `sock.send`, the stack's run written at the end of the batch; tunnel -> the stack's view ->
 * the shard's run writer (copied into a run, sent with one segmented send per run at the end
 * of the tunnel's batch).
 */
import {
  FLOW_CONTROL_LENGTH,
  type FlowToken,
  isFlowControl,
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
import type { RelayRole, ServerFlows } from "./flow-groups.js";

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
  /** Its part in a flow group (see flow-groups.ts). */
  role: RelayRole = { kind: "alone" };
  /** Datagrams relayed from the client to the application (a join must come before any). */
  carried = 0;
  /** While joining: the token and flow the client sent, and our number for the member. */
  joinToken: FlowToken | undefined;
  joinFlow = 0;
  memberNumber = 0;
  private closed = false;
  /** The UDP socket was closed (a member's) or handed to a group (an owner's). */
  private udpGone = false;
  private group: ((batch: UdpBatch) => void) | undefined;

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
    flows?: ServerFlows,
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
      if (this.group !== undefined) {
        this.group(batch);
        return;
      }
      for (let i = 0; i < batch.count; i++) sendToTunnel(sock, batch.datagram(i), totals);
      flushTunnel();
    });
    const udp = this.udp;
    const counting = udpCounting(totals);
    // A connected socket: no destination record. Control messages of flow groups are looked
    // for only on connections of ours (a phantun client's datagrams always pass as they are);
    // a member's datagrams go to its group's socket.
    sock.onDatagram((view) => {
      if (
        flows !== undefined &&
        view.length === FLOW_CONTROL_LENGTH &&
        sock.peerIsOurs &&
        isFlowControl(view)
      ) {
        flows.control(this, view);
        return;
      }
      const kind = this.role.kind;
      if (kind === "alone" || kind === "owner") {
        this.carried++;
        runs.send(udp, view, undefined, counting);
      } else if (kind === "member") flows!.up(this, view);
      else totals.queueDrops++;
    });
    sock.once("close", (info) => this.close(info.cause));
  }

  /** Datagrams from the application too large for a receive slot, dropped by the socket. */
  truncated(): number {
    return this.udpGone ? 0 : this.udp.stats().truncated;
  }

  /**
   * A group takes over the UDP socket: what it receives goes to `handler`, and the group, not
   * this relay, closes it.
   */
  adoptUdp(handler: (batch: UdpBatch) => void): void {
    this.group = handler;
    this.udpGone = true;
  }

  /** Joined a group elsewhere: this relay's own UDP socket (never used) closes. */
  becomeMember(): void {
    if (this.udpGone) return;
    this.udpGone = true;
    this.udp.close();
    this.totals.udpSockets--;
  }

  /** True once the relay has closed. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Closes the UDP socket and the connection (RST) and reports `cause`. Idempotent. */
  close(cause: string = LOCAL_CLOSE): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.udpGone) {
      this.totals.sendDrops += this.udp.stats().truncated;
      this.udp.close();
      this.totals.udpSockets--;
    }
    try {
      this.sock.close();
    } finally {
      this.onClose(this, cause);
    }
  }
}
