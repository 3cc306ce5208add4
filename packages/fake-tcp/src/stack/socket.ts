/** One fake-TCP connection: its identity, sequence state, timers' inputs and public API. */
import { EventEmitter } from "node:events";
import { formatIpv4, formatIpv6 } from "../wire/address.js";
import { BoundedQueue } from "./bounded-queue.js";

/** Why a socket closed. */
export type CloseCause =
  /** `close()` was called on the socket. */
  | "local"
  /** The stack was closed. */
  | "stack-closed"
  /** The peer sent an RST. */
  | "peer-reset"
  /** A passive socket's peer started a new handshake on the same tuple (it restarted). */
  | "peer-restarted"
  /** No traffic either way for `idleTimeoutMs`. */
  | "idle-timeout"
  /** A peer of ours (see `Socket.peerIsOurs`) stopped answering keepalive probes. */
  | "dead-peer"
  /** The handshake was refused (RST) or not answered in time. */
  | "handshake-failed"
  /** The connection table was full: this accepted connection, unused or idle, made room. */
  | "evicted";

/** Payload of the socket's `close` event. */
export interface CloseInfo {
  cause: CloseCause;
  /** Human-readable detail. */
  message: string;
}

/** Per-connection counters. */
export interface SocketCounters {
  datagramsSent: number;
  bytesSent: number;
  datagramsReceived: number;
  bytesReceived: number;
  /** Datagrams not sent because they would not fit the device MTU. */
  droppedTooBig: number;
  /** Datagrams the device refused to write. */
  droppedByDevice: number;
  /** Received datagrams dropped because the receive queue was full. */
  droppedQueueFull: number;
  /** Pure ACKs sent (delayed acks and probe answers). */
  acksSent: number;
  /** Keepalives sent (plain pure ACKs, to a peer not known to be ours). */
  keepalivesSent: number;
  /** Probes sent to a peer of ours, and how many it answered. */
  probesSent: number;
  probesAnswered: number;
}

/** Connection states. */
export const SocketState = {
  synSent: 0,
  synReceived: 1,
  established: 2,
  closed: 3,
} as const;

/** The operations a socket needs from the stack that owns it. */
export interface SocketHost {
  sendData(socket: Socket, datagram: Uint8Array): boolean;
  closeSocket(socket: Socket, cause: CloseCause, message: string, sendRst: boolean): void;
}

/**
 * A fake-TCP connection carrying one datagram per segment.
 *
 * Events: `close` `(info: CloseInfo)`, emitted once when the socket closes for any reason.
 *
 * Receiving: register `onDatagram(handler)` (zero-copy, fastest) or iterate the socket with
 * `for await` (copies). Datagrams arriving before either is set are queued (bounded, copied)
 * and handed to whichever comes first.
 */
export class Socket extends EventEmitter {
  /** @internal */ state: number;
  /** IP version: 4 or 6. */
  readonly family: 4 | 6;
  /** @internal Remote/local address words, stored as int32 so they stay small integers. */
  readonly r0: number;
  /** @internal */ readonly r1: number;
  /** @internal */ readonly r2: number;
  /** @internal */ readonly r3: number;
  /** @internal */ readonly l0: number;
  /** @internal */ readonly l1: number;
  /** @internal */ readonly l2: number;
  /** @internal */ readonly l3: number;
  readonly remotePort: number;
  readonly localPort: number;
  /** @internal True for sockets made by a listener. */
  readonly passive: boolean;
  /** @internal Index of the device queue this flow uses. */
  readonly queueIndex: number;
  /** @internal Hash of the tuple (table key) and the next socket with the same hash. */
  readonly hash: number;
  /** @internal */ nextInBucket: Socket | null = null;
  /** @internal Unfolded pseudo-header sum (without length) and IPv4 header base sum. */
  readonly pseudoBase: number;
  /** @internal */ readonly ipBase: number;
  /** @internal Our initial sequence number (int32): 0 for a client, random or a cookie for a server. */
  iss = 0;
  /** @internal Next sequence number to send (int32). */
  sndNxt = 0;
  /** @internal Highest sequence number received, seq + length (int32, modulo 2^32). */
  rcvHigh = 0;
  /** @internal Last believed acknowledgment number received (int32). */
  peerAck = 0;
  /** @internal Sequence validation (see validate.ts): ack windows and the resync chain. */
  ackFloor = 0;
  /** @internal */ freshFloor = 0;
  /** @internal */ sndMark0 = 0;
  /** @internal */ sndMark1 = 0;
  /** @internal */ chainNext = 0;
  /** @internal */ chainCount = 0;
  /** @internal */ chainAt = 0;
  /** @internal Clock (ms) of the last challenge ACK (rate limit per connection). */
  lastChallengeAt = Number.NEGATIVE_INFINITY;
  /** @internal Handshake: transmissions so far and deadline of the current one. */
  attempts = 0;
  /** @internal */ deadline = 0;
  /**
   * @internal Passive sockets: clock (ms) of the last SYN seq 0 on this established tuple, 0
   * when none is pending. Only an ACK proving the cookie we answered it with replaces the
   * connection (the peer restarted); until then the connection is untouched.
   */
  restartSynAt = 0;
  /** @internal Passive sockets: clock (ms) when the handshake completed (eviction age). */
  establishedAt = 0;
  /** @internal Clock (ms) of the last packet received and the last datagram sent. */
  lastReceived = 0;
  /** @internal */ lastSent = 0;
  /** @internal Received bytes not yet acknowledged, and since when. */
  unackedBytes = 0;
  /** @internal */ unackedSince = 0;
  /** @internal Keepalive and probe state (see liveness.ts). */
  lastProbeAt = 0;
  /** @internal */ probeSeq = 0;
  /** @internal */ probeSeq1 = 0;
  /** @internal */ probeSeq2 = 0;
  /** @internal */ probesOutstanding = 0;
  /** @internal */ probesUnanswered = 0;
  /** @internal */ lastAnswerAt = Number.NEGATIVE_INFINITY;
  /** @internal Probes sent in the current idle period (how far back the next one steps). */
  probeStep = 0;
  /** @internal Probes of the fast check after a doubtful RST; 0 when no check runs. */
  verifyProbes = 0;
  /**
   * True when the handshake negotiated that the peer is a program of ours (it answers
   * keepalive probes, so dead-peer detection may act on it). Never true for a phantun peer.
   */
  peerIsOurs = false;
  /** @internal The peer's initial sequence number (int32): 0 unkeyed, its nonce keyed. */
  irs = 0;
  /** @internal Keyed mode: IPv6 flow label of every segment (0 unkeyed). */
  flowLabel = 0;
  /**
   * @internal Keyed client handshake: the SYN token (TSval) of the last SYN and of the one
   * before it if the slot changed in between (-1: none), the SYN's IPv4 ID, and whether an RST
   * came back (a server without the key; see `Stack.receiveSynSent`).
   */
  keyTsval = 0;
  /** @internal */ keyPreviousTsval = -1;
  /** @internal */ synIpId = 0;
  /** @internal */ resetInHandshake = false;
  /** @internal Keyed mode: RSTs received during the fast check under way (forged if it is answered). */
  rstsInCheck = 0;
  /** Counters for this connection. */
  readonly counters: SocketCounters = {
    datagramsSent: 0,
    bytesSent: 0,
    datagramsReceived: 0,
    bytesReceived: 0,
    droppedTooBig: 0,
    droppedByDevice: 0,
    droppedQueueFull: 0,
    acksSent: 0,
    keepalivesSent: 0,
    probesSent: 0,
    probesAnswered: 0,
  };
  /** @internal Pending connect() promise callbacks (active sockets in handshake). */
  connectResolve: ((s: Socket) => void) | null = null;
  /** @internal */ connectReject: ((e: Error) => void) | null = null;
  /** @internal The zero-copy receive handler, if any. */
  handler: ((datagram: Buffer) => void) | null = null;
  /** @internal Copies of datagrams waiting for a consumer (created on first need). */
  queue: BoundedQueue<Buffer> | null = null;
  /** Why the socket closed, once closed. */
  closeInfo: CloseInfo | null = null;
  private readonly host: SocketHost;
  private readonly queueLimit: number;

  /** @internal Sockets are made by `Stack.connect` and `Stack.accept`, never directly. */
  constructor(
    host: SocketHost,
    init: {
      state: number;
      family: 4 | 6;
      remote: ArrayLike<number>;
      local: ArrayLike<number>;
      remotePort: number;
      localPort: number;
      passive: boolean;
      queueIndex: number;
      hash: number;
      pseudoBase: number;
      ipBase: number;
      queueLimit: number;
      now: number;
    },
  ) {
    super();
    this.host = host;
    this.state = init.state;
    this.family = init.family;
    this.r0 = init.remote[0] | 0;
    this.r1 = (init.remote[1] ?? 0) | 0;
    this.r2 = (init.remote[2] ?? 0) | 0;
    this.r3 = (init.remote[3] ?? 0) | 0;
    this.l0 = init.local[0] | 0;
    this.l1 = (init.local[1] ?? 0) | 0;
    this.l2 = (init.local[2] ?? 0) | 0;
    this.l3 = (init.local[3] ?? 0) | 0;
    this.remotePort = init.remotePort;
    this.localPort = init.localPort;
    this.passive = init.passive;
    this.queueIndex = init.queueIndex;
    this.hash = init.hash;
    this.pseudoBase = init.pseudoBase;
    this.ipBase = init.ipBase;
    this.queueLimit = init.queueLimit;
    this.lastReceived = init.now;
    this.lastSent = init.now;
    this.lastProbeAt = init.now;
  }

  /** Remote IP address as text. */
  get remoteAddress(): string {
    return this.family === 4
      ? formatIpv4(this.r0 >>> 0)
      : formatIpv6([this.r0 >>> 0, this.r1 >>> 0, this.r2 >>> 0, this.r3 >>> 0]);
  }

  /** Local IP address as text. */
  get localAddress(): string {
    return this.family === 4
      ? formatIpv4(this.l0 >>> 0)
      : formatIpv6([this.l0 >>> 0, this.l1 >>> 0, this.l2 >>> 0, this.l3 >>> 0]);
  }

  /** True until the socket closes. Only an established socket can send. */
  get established(): boolean {
    return this.state === SocketState.established;
  }

  get closed(): boolean {
    return this.state === SocketState.closed;
  }

  /**
   * Sends one datagram as one segment (flag ACK only); the sequence number advances by its
   * length. Synchronous: the bytes may be reused on return. Returns false when the datagram
   * was dropped: socket not established, larger than the device MTU allows (never fragmented;
   * counted and logged, rate-limited), or refused by the device. Empty datagrams are not sent
   * (a zero-length segment would never be delivered) and return false.
   */
  send(datagram: Uint8Array): boolean {
    return this.host.sendData(this, datagram);
  }

  /**
   * Sets the zero-copy receive handler (replacing any earlier one); `null` removes it.
   *
   * The `datagram` passed to the handler is a view into the device's receive buffer and is
   * valid ONLY during the call: copy it (e.g. `Buffer.from(datagram)`) to keep it. Datagrams
   * queued before the handler was set are delivered to it first.
   */
  onDatagram(handler: ((datagram: Buffer) => void) | null): void {
    this.handler = handler;
    if (handler && this.queue) {
      for (let d = this.queue.shift(); d !== undefined; d = this.queue.shift()) handler(d);
    }
  }

  /** @internal Called by the stack with a view of a received payload. */
  deliver(datagram: Buffer): void {
    this.counters.datagramsReceived++;
    this.counters.bytesReceived += datagram.length;
    const handler = this.handler;
    if (handler !== null) {
      handler(datagram);
      return;
    }
    if (this.queue === null) this.queue = new BoundedQueue(this.queueLimit);
    if (!this.queue.push(Buffer.from(datagram))) this.counters.droppedQueueFull++;
  }

  /**
   * Iterates received datagrams (each a private copy). Ends when the socket closes. A
   * consumer slower than the peer loses datagrams beyond `receiveQueueLimit` (counted in
   * `counters.droppedQueueFull`), as UDP would.
   */
  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    if (this.queue === null) {
      this.queue = new BoundedQueue(this.queueLimit);
      if (this.state === SocketState.closed) this.queue.end();
    }
    const queue = this.queue;
    return { next: () => queue.next() };
  }

  /** Closes the connection: sends one RST (seq = current seq, ack 0) and emits `close`. */
  close(): void {
    if (this.state === SocketState.closed) return;
    this.host.closeSocket(this, "local", "closed locally", true);
  }

  /** @internal Marks closed, settles waiters and emits `close`. Called once by the stack. */
  finish(info: CloseInfo): void {
    this.state = SocketState.closed;
    this.closeInfo = info;
    this.handler = null;
    this.queue?.end();
    if (this.connectReject) {
      const reject = this.connectReject;
      this.connectReject = null;
      this.connectResolve = null;
      const err = new Error(
        `connect to ${this.remoteAddress}:${this.remotePort} failed: ${info.message}`,
      );
      (err as Error & { code?: string; cause?: unknown }).code =
        info.cause === "handshake-failed" ? handshakeErrorCode(info.message) : "ECONNABORTED";
      reject(err);
    }
    this.emit("close", info);
  }
}

function handshakeErrorCode(message: string): string {
  return message.includes("reset") ? "ECONNREFUSED" : "ETIMEDOUT";
}
