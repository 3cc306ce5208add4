/**
 * One UDP peer of the client and its fake-TCP connection.
 *
 * The session opens its connection on the first datagram, queueing a bounded number of
 * datagrams meanwhile so that the one that triggered it is not lost. Once open, the hot
 * path is synchronous in both directions and copies nothing: UDP -> `sock.send(view)`,
 * tunnel -> `via.sendTo(view, peer, record)` (which sends or copies it before returning, and
 * counts it when it is written).
 */
import type { Socket } from "node:dgram";
import {
  FLOW_CONTROL_LENGTH,
  formatAddress,
  isFlowControl,
  type RelayCounters,
  type RunCounting,
  type SocketAddress,
  sendToTunnel,
  type TunnelSocket,
} from "fake-tcp-common";
import type { ClientFlows, SpreadGroup } from "./flow-group.js";
import {
  type HandshakeGate,
  handshakeOutcomeOf,
  type LeaveGate,
  type ReleaseHandshake,
} from "./handshake-gate.js";

/**
 * A local UDP socket that replies leave from: the one the peer last sent to, so that the
 * reply's source is the address the peer used.
 */
export interface ReplySocket {
  /**
   * Sends `datagram` to `peer`, whose native address record (see fake-tcp-tun/udp) a batched
   * socket uses. `datagram` is valid only during the call: an asynchronous implementation
   * must copy it.
   */
  sendTo(datagram: Uint8Array, peer: SocketAddress, record: Uint8Array | undefined): void;
  /**
   * The index of the `--local` address of a batched socket (every shard has one on each):
   * the peer of such a socket may be spread over flows in other shards.
   */
  readonly listen?: number;
}

/**
 * A {@link ReplySocket} over a node:dgram socket (asynchronous send, so it copies); a datagram
 * is counted as sent when node takes it.
 */
export function dgramReplySocket(socket: Socket, counting: RunCounting): ReplySocket {
  return {
    sendTo: (datagram, peer) => {
      socket.send(Buffer.from(datagram), peer.port, peer.address);
      counting.sent(1, datagram.byteLength);
    },
  };
}

/** Datagrams held per peer while its connection is being set up. */
export const MAX_QUEUED_DATAGRAMS = 64;

/** What a session needs from the client around it. */
export interface SessionContext {
  /**
   * Opens a connection for `peer`, resolving the server name again. Rejects when no
   * address of the server answers.
   */
  connect(): Promise<TunnelSocket>;
  /**
   * Milliseconds the session must wait before it connects (0: connect now, and the caller
   * counts the attempt). Asked again when a wait ends.
   */
  connectDelay(session: PeerSession): number;
  /**
   * The shard's bound on handshakes at once (absent: every session connects at once). A
   * session that may connect waits here for a slot; its datagrams are queued meanwhile.
   */
  readonly gate?: HandshakeGate;
  /** The handshake packet to send first on every connection, if any. */
  readonly handshakePacket: Buffer | undefined;
  /** Totals over all sessions. */
  readonly totals: RelayCounters;
  /** Called on tunnel->UDP traffic so that the table keeps an active session fresh. */
  touch(session: PeerSession): void;
  opened(session: PeerSession, sock: TunnelSocket): void;
  /** The connection could not be opened. */
  failed(session: PeerSession, err: unknown): void;
  /** The session ended (its connection closed, or it was closed before opening). */
  closed(session: PeerSession, cause: string): void;
  /** The shard's flow groups (absent: a peer is never spread). */
  readonly flows?: ClientFlows;
  /** `--flow-rate`: datagrams (both ways) within a second that make a peer spread (0: at once). */
  readonly flowRate?: number;
}

/** Datagrams between two looks at the clock while a peer's rate is measured. */
const RATE_CHECK_EVERY = 64;

/**
 * The cause given to a session whose connection ended before the session could listen for
 * its end (see `PeerSession.established`).
 */
export const CLOSED_AT_OPEN = "closed-at-open";

type State = "waiting" | "connecting" | "open" | "closed";

/** A UDP peer and its connection. */
export class PeerSession {
  /** `ip:port` of the UDP peer: its name in the peer table and the logs. */
  readonly key: string;
  readonly openedAt = Date.now();
  /**
   * When the peer table last refreshed this session's age (see `PeerTable.touch`):
   * the peer's last activity, to within the table's touch interval.
   */
  touchedAt = this.openedAt;
  /** When the connection was established (undefined until then). */
  establishedAt: number | undefined;
  /** Datagrams the connection delivered from the server. */
  fromServer = 0;
  private state: State = "waiting";
  private sock: TunnelSocket | undefined;
  private pending: Buffer[] = [];
  private waitTimer: NodeJS.Timeout | undefined;
  /** While waiting for a slot of the handshake gate: leaves its queue. */
  private leaveGate: LeaveGate | undefined;
  /** The local socket the peer last sent to; replies leave from it. */
  private via: ReplySocket;
  /** The peer's datagrams spread over several connections (see flow-group.ts). */
  private group: SpreadGroup | undefined;
  /** While the peer may still be spread: datagrams counted since `rateSince`. */
  private rateCount = -1;
  private rateSince = 0;

  /**
   * `record` is the peer as a batched socket's native address record (so that replies need no
   * address parsing, and the peer table finds the session by it), `recordKey` its numeric key
   * (`UdpBatch.key`); a session of a node:dgram socket has neither.
   */
  constructor(
    readonly peer: SocketAddress,
    via: ReplySocket,
    private readonly context: SessionContext,
    readonly record?: Uint8Array,
    readonly recordKey = Number.NaN,
  ) {
    this.key = formatAddress(peer.address, peer.port);
    this.via = via;
    this.start();
  }

  /** The connection, once open. */
  get socket(): TunnelSocket | undefined {
    return this.sock;
  }

  get isOpen(): boolean {
    return this.state === "open";
  }

  get isClosed(): boolean {
    return this.state === "closed";
  }

  /** True while the session waits for its turn to connect (see `SessionContext.connectDelay`). */
  get isWaiting(): boolean {
    return this.state === "waiting";
  }

  /**
   * Handles one datagram from the peer, received on `via`. The datagram is valid only
   * during the call (a view into a receive batch).
   */
  fromPeer(datagram: Uint8Array, via: ReplySocket): void {
    this.via = via;
    const totals = this.context.totals;
    if (this.state === "open") {
      const group = this.group;
      if (group?.spreading) group.send(datagram);
      else {
        sendToTunnel(this.sock!, datagram, totals);
        if (this.rateCount >= 0 && ++this.rateCount % RATE_CHECK_EVERY === 0) this.measureRate();
      }
    } else if (this.state !== "closed" && this.pending.length < MAX_QUEUED_DATAGRAMS) {
      // Only until the connection opens: keeping the datagram past this call needs a copy.
      this.pending.push(Buffer.from(datagram));
    } else {
      totals.queueDrops++;
    }
  }

  /** Closes the connection (RST) or abandons the setup; `cause` goes to the log. */
  close(cause: string): void {
    if (this.state === "closed") return;
    const sock = this.sock;
    this.finish(cause);
    sock?.close();
  }

  /** Every path that ends the session comes here once: what it holds is released. */
  private finish(cause: string): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.group?.close();
    this.group = undefined;
    this.rateCount = -1;
    if (this.waitTimer !== undefined) clearTimeout(this.waitTimer);
    this.waitTimer = undefined;
    // Closed while waiting for a slot: it never connects.
    this.leaveGate?.();
    this.leaveGate = undefined;
    this.context.totals.queueDrops += this.pending.length;
    this.pending = [];
    this.context.closed(this, cause);
  }

  /** Connects now, or once the context's wait is over. */
  private start(): void {
    const wait = this.context.connectDelay(this);
    if (wait > 0) {
      this.waitTimer = setTimeout(() => {
        this.waitTimer = undefined;
        if (this.state === "waiting") this.start();
      }, wait);
      this.waitTimer.unref();
      return;
    }
    this.state = "connecting";
    const gate = this.context.gate;
    if (gate === undefined) {
      this.connect(undefined);
      return;
    }
    this.leaveGate = gate.enter((release) => {
      this.leaveGate = undefined;
      this.connect(release);
    });
  }

  /** Starts the handshake; `release` frees the gate's slot when it ends. */
  private connect(release: ReleaseHandshake | undefined): void {
    if (this.state === "closed") {
      // Its turn came after it was closed: the slot goes to the next one.
      release?.("failed");
      return;
    }
    this.context.connect().then(
      (sock) => {
        release?.("completed");
        this.established(sock);
      },
      (err: unknown) => {
        release?.(handshakeOutcomeOf(err));
        if (this.state === "closed") return;
        this.context.failed(this, err);
        this.finish("connect-failed");
      },
    );
  }

  /** Every `RATE_CHECK_EVERY` datagrams: spread the peer once it sends `flowRate` a second. */
  private measureRate(): void {
    const now = Date.now();
    const elapsed = now - this.rateSince;
    const rate = this.context.flowRate ?? 0;
    if (elapsed <= 1_000) {
      if (this.rateCount >= rate) this.spread();
    } else {
      this.rateCount = 0;
      this.rateSince = now;
    }
  }

  /** Opens the peer's further flows (the first connection asks the server for a group). */
  private spread(): void {
    this.rateCount = -1;
    const flows = this.context.flows;
    const sock = this.sock;
    if (flows === undefined || sock === undefined || this.group !== undefined) return;
    this.group = flows.startGroup(
      sock,
      { address: this.peer, record: this.record, listen: this.via.listen ?? 0 },
      // The server's datagrams on the other flows are the peer's traffic too.
      () => this.context.touch(this),
    );
  }

  private established(sock: TunnelSocket): void {
    if (this.state === "closed") {
      // Closed (evicted, shutdown) while the handshake was running.
      sock.close();
      return;
    }
    if (sock.closed) {
      // Between the handshake resolving connect() and this turn, the connection ended (a
      // reset in the same batch of packets): its close event is gone, nobody will call.
      this.context.failed(this, new Error("the connection ended as it opened"));
      this.finish(CLOSED_AT_OPEN);
      return;
    }
    this.sock = sock;
    this.state = "open";
    this.establishedAt = Date.now();
    const totals = this.context.totals;
    sock.onDatagram((view) => {
      if (this.group !== undefined && view.length === FLOW_CONTROL_LENGTH && isFlowControl(view)) {
        this.group.control(view);
        return;
      }
      this.via.sendTo(view, this.peer, this.record);
      if (this.rateCount >= 0 && ++this.rateCount % RATE_CHECK_EVERY === 0) this.measureRate();
      this.fromServer++;
      this.context.touch(this);
    });
    sock.once("close", (info) => {
      // A spread peer whose other flows still carry it keeps its session: the group opens
      // this flow again (see SpreadGroup.firstLost); it ends when its last flow does.
      if (this.group?.firstLost(() => this.finish("flows-lost"))) return;
      this.finish(info.cause);
    });
    this.context.opened(this, sock);
    // Spread only towards a server of ours, and only a peer of a batched socket (every shard
    // has one on the same address).
    if (this.context.flows?.enabled && sock.peerIsOurs && this.via.listen !== undefined) {
      this.rateCount = 0;
      this.rateSince = this.establishedAt;
      if ((this.context.flowRate ?? 0) === 0) this.spread();
    }
    if (this.context.handshakePacket) sock.send(this.context.handshakePacket);
    const queued = this.pending;
    this.pending = [];
    let i = 0;
    for (; i < queued.length && this.state === "open"; i++) sendToTunnel(sock, queued[i], totals);
    // Closed while sending what was queued: the rest was never sent.
    totals.queueDrops += queued.length - i;
  }
}
