/**
 * One connection of the phantun-shaped peer (see `phantun-peer.ts`): its handshake steps, the
 * established-state rules of phantun 0.8 (one segment per datagram, ack = seq + length of the
 * last segment received, a pure ACK only when that ack is more than 128 MiB past the last ack
 * sent, modulo 2^32), and its close (one RST). It is deliberately naive where phantun is: it
 * never validates seq or ack, never retransmits, and ignores options.
 */
import { EventEmitter } from "node:events";
import { formatIpv4, formatIpv6 } from "../wire/address.js";
import { TcpFlags } from "../wire/tcp.js";

const { SYN, ACK, RST } = TcpFlags;

/** Connection states, phantun's names. */
export type PhantunState = "syn-sent" | "syn-received" | "established" | "closed";

/** Why a phantun-shaped connection closed. */
export type PhantunCloseReason =
  /** `close()` was called (or the peer was closed). */
  | "local"
  /** An RST arrived. */
  | "reset"
  /** No packet either way for the idle timeout. */
  | "idle"
  /** The handshake was refused (RST) or got no valid answer after every attempt. */
  | "handshake-failed";

/** What one connection saw and sent. */
export interface PhantunConnectionCounters {
  /** Segments received after the handshake (any flags but RST). */
  segmentsReceived: number;
  datagramsReceived: number;
  bytesReceived: number;
  /** Zero-length segments received (pure ACKs, keepalive probes): never delivered. */
  emptySegments: number;
  datagramsSent: number;
  bytesSent: number;
  /** Pure ACKs sent by the 128 MiB rule, whatever the reason. */
  pureAcksSent: number;
  /**
   * The part of `pureAcksSent` drawn by a segment whose seq + length lies behind the last ack
   * sent: the backwards step wraps modulo 2^32 and so "exceeds" 128 MiB. This is how phantun
   * happens to answer a keepalive probe (seq = next - 1) once; it says nothing about liveness.
   */
  wrapAcksSent: number;
}

/** @internal What a connection needs from the peer that owns it. */
export interface PhantunHost {
  /** Builds and writes one segment of this connection. False when the device refused it. */
  writeSegment(
    c: PhantunConnection,
    flags: number,
    seq: number,
    ack: number,
    payload?: Uint8Array,
  ): boolean;
  /** The connection finished its handshake. */
  established(c: PhantunConnection): void;
  /** The connection closed: forget its tuple. */
  closed(c: PhantunConnection, reason: PhantunCloseReason): void;
  readonly handshakeAttempts: number;
  readonly handshakeTimeoutMs: number;
  readonly unackedLimit: number;
}

/** @internal Where a connection lives: addresses as the wire parser gives them. */
export interface PhantunTuple {
  family: 4 | 6;
  /** IPv4: one unsigned 32-bit number; IPv6: four unsigned 32-bit words. */
  local: number | readonly number[];
  remote: number | readonly number[];
  localPort: number;
  remotePort: number;
}

/**
 * A phantun-shaped fake-TCP connection. Events: `close` `(reason: PhantunCloseReason)`, once.
 * Datagrams arriving before `onDatagram` is set are kept (copied, at most 4096) for it.
 */
export class PhantunConnection extends EventEmitter {
  readonly family: 4 | 6;
  readonly localPort: number;
  readonly remotePort: number;
  /** @internal */ readonly local: number | readonly number[];
  /** @internal */ readonly remote: number | readonly number[];
  /** True for a connection made by `connect` (phantun's client role). */
  readonly active: boolean;
  state: PhantunState;
  /** Sequence number of the next segment sent (unsigned 32-bit). */
  seq = 0;
  /** Acknowledgment number carried by the next segment sent: seq + length of the last received. */
  ack = 0;
  /** The ack field of the last segment this connection built (phantun's "last ack"). */
  lastAck = 0;
  /** Why it closed, once closed. */
  closeReason: PhantunCloseReason | null = null;
  /** Clock (ms) of the last packet either way, for the idle timeout. */
  lastActivity: number;
  readonly counters: PhantunConnectionCounters = {
    segmentsReceived: 0,
    datagramsReceived: 0,
    bytesReceived: 0,
    emptySegments: 0,
    datagramsSent: 0,
    bytesSent: 0,
    pureAcksSent: 0,
    wrapAcksSent: 0,
  };
  private handler: ((datagram: Buffer) => void) | null = null;
  private readonly pending: Buffer[] = [];
  private attempts = 0;
  private attemptTimer: NodeJS.Timeout | null = null;
  private connectSettle: ((err: Error | null) => void) | null = null;
  /** Set when the handshake ended for want of an answer (rather than an RST). */
  private timedOut = false;

  /** @internal Made by `PhantunPeer.connect` and by its listener, never directly. */
  constructor(
    private readonly host: PhantunHost,
    tuple: PhantunTuple,
    active: boolean,
  ) {
    super();
    this.family = tuple.family;
    this.local = tuple.local;
    this.remote = tuple.remote;
    this.localPort = tuple.localPort;
    this.remotePort = tuple.remotePort;
    this.active = active;
    this.state = active ? "syn-sent" : "syn-received";
    this.lastActivity = Date.now();
  }

  get remoteAddress(): string {
    return addressText(this.remote);
  }

  get localAddress(): string {
    return addressText(this.local);
  }

  get established(): boolean {
    return this.state === "established";
  }

  get closed(): boolean {
    return this.state === "closed";
  }

  /**
   * Sends one datagram as one segment (flag ACK, seq then advanced by its length). Returns
   * false when not established, empty, or refused by the device (phantun advances seq anyway
   * once the packet is built; so does this).
   */
  send(datagram: Uint8Array): boolean {
    if (this.state !== "established" || datagram.length === 0) return false;
    const ok = this.write(ACK, datagram);
    this.seq = (this.seq + datagram.length) >>> 0;
    if (ok) {
      this.counters.datagramsSent++;
      this.counters.bytesSent += datagram.length;
    }
    return ok;
  }

  /** Sets the receive handler (each datagram a private copy); queued datagrams go first. */
  onDatagram(handler: ((datagram: Buffer) => void) | null): void {
    this.handler = handler;
    if (handler)
      for (let d = this.pending.shift(); d !== undefined; d = this.pending.shift()) handler(d);
  }

  /** Closes the connection: one RST (seq = current seq, ack 0, flag RST only). Idempotent. */
  close(): void {
    this.finish("local");
  }

  // ---- driven by the peer ----------------------------------------------------------------

  /** @internal Client role: sends the first SYN and settles `done` when the handshake ends. */
  startConnect(done: (err: Error | null) => void): void {
    this.connectSettle = done;
    this.sendHandshake();
  }

  /** @internal Server role: answers the SYN (seq 0) that created this connection. */
  startAccept(): void {
    this.ack = 1; // the SYN's seq (0) + 1
    this.sendHandshake();
  }

  /** @internal A segment for this tuple. `payload` is a view valid only during the call. */
  receive(flags: number, seq: number, ack: number, payload: Uint8Array): void {
    this.lastActivity = Date.now();
    if (this.state === "syn-sent") this.receiveSynSent(flags, seq, ack);
    else if (this.state === "syn-received") this.receiveSynReceived(flags, ack);
    else if (this.state === "established") this.receiveEstablished(flags, seq, payload);
  }

  /** @internal Closes with `reason`, sending the RST phantun sends whenever a socket goes away. */
  finish(reason: PhantunCloseReason): void {
    if (this.state === "closed") return;
    this.clearAttemptTimer();
    // phantun's socket always resets its peer when dropped, even after receiving an RST.
    this.host.writeSegment(this, RST, this.seq, 0);
    this.state = "closed";
    this.closeReason = reason;
    this.handler = null;
    this.pending.length = 0;
    this.host.closed(this, reason);
    const settle = this.connectSettle;
    this.connectSettle = null;
    settle?.(connectError(this, reason, this.timedOut));
    this.emit("close", reason);
  }

  // ---- handshake -------------------------------------------------------------------------

  /** Sends the SYN (client) or SYN-ACK (server) and arms this attempt's timeout. */
  private sendHandshake(): void {
    this.attempts++;
    this.write(this.active ? SYN : SYN | ACK);
    this.attemptTimer = setTimeout(() => this.attemptTimedOut(), this.host.handshakeTimeoutMs);
    this.attemptTimer.unref?.();
  }

  private attemptTimedOut(): void {
    this.attemptTimer = null;
    if (this.state !== "syn-sent" && this.state !== "syn-received") return;
    if (this.attempts < this.host.handshakeAttempts) this.sendHandshake();
    else {
      this.timedOut = true;
      this.finish("handshake-failed");
    }
  }

  private clearAttemptTimer(): void {
    if (this.attemptTimer !== null) clearTimeout(this.attemptTimer);
    this.attemptTimer = null;
  }

  /** Client: only flags exactly SYN+ACK with ack 1 complete; the server's seq is taken as given. */
  private receiveSynSent(flags: number, seq: number, ack: number): void {
    if ((flags & RST) !== 0) {
      this.finish("handshake-failed");
      return;
    }
    if (flags !== (SYN | ACK) || ack !== (this.seq + 1) >>> 0) return;
    this.clearAttemptTimer();
    this.seq = (this.seq + 1) >>> 0;
    this.ack = (seq + 1) >>> 0;
    this.write(ACK);
    this.becomeEstablished();
  }

  /**
   * Server: only flags exactly ACK with ack 1 complete. phantun consumes that segment in its
   * handshake: a payload riding on it is never delivered, and it does not move the ack.
   */
  private receiveSynReceived(flags: number, ack: number): void {
    if ((flags & RST) !== 0) {
      this.finish("handshake-failed");
      return;
    }
    if (flags !== ACK || ack !== (this.seq + 1) >>> 0) return;
    this.clearAttemptTimer();
    this.seq = (this.seq + 1) >>> 0;
    this.becomeEstablished();
  }

  private becomeEstablished(): void {
    this.state = "established";
    this.host.established(this);
    const settle = this.connectSettle;
    this.connectSettle = null;
    settle?.(null);
  }

  // ---- established -----------------------------------------------------------------------

  private receiveEstablished(flags: number, seq: number, payload: Uint8Array): void {
    if ((flags & RST) !== 0) {
      this.finish("reset");
      return;
    }
    this.counters.segmentsReceived++;
    // Every segment, whatever its flags or seq, sets the ack; it may move backwards.
    const newAck = (seq + payload.length) >>> 0;
    const step = (newAck - this.lastAck) >>> 0;
    this.ack = newAck;
    if (step > this.host.unackedLimit) {
      this.counters.pureAcksSent++;
      if (step >= 0x80000000) this.counters.wrapAcksSent++;
      this.write(ACK);
    }
    if (payload.length === 0) {
      this.counters.emptySegments++;
      return;
    }
    this.counters.datagramsReceived++;
    this.counters.bytesReceived += payload.length;
    const copy = Buffer.from(payload);
    if (this.handler !== null) this.handler(copy);
    else if (this.pending.length < 4096) this.pending.push(copy);
  }

  /** Builds a segment at the current seq and ack; like phantun, remembers the ack it carried. */
  private write(flags: number, payload?: Uint8Array): boolean {
    this.lastAck = this.ack;
    this.lastActivity = Date.now();
    return this.host.writeSegment(this, flags, this.seq, this.ack, payload);
  }
}

function addressText(a: number | readonly number[]): string {
  return typeof a === "number" ? formatIpv4(a) : formatIpv6(a);
}

/** ETIMEDOUT (no answer), ECONNREFUSED (RST) or ECONNABORTED (closed meanwhile). */
function connectError(c: PhantunConnection, reason: PhantunCloseReason, timedOut: boolean): Error {
  const code = timedOut
    ? "ETIMEDOUT"
    : reason === "handshake-failed"
      ? "ECONNREFUSED"
      : "ECONNABORTED";
  const err = new Error(
    `phantun-shaped connect to ${c.remoteAddress}:${c.remotePort} failed: ${code}`,
  ) as Error & { code: string };
  err.code = code;
  return err;
}
