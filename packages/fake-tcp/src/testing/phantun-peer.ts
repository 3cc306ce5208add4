/**
 * A phantun-shaped peer: a small implementation of phantun 0.8's fake-TCP behaviour on the
 * wire, independent of our `Stack`, over one `DeviceQueue`, for interoperability tests (there
 * is no phantun binary to test against). It reproduces what a phantun peer sends and how it
 * reacts, including its quirks: it never validates seq or ack, acknowledges only by the
 * 128 MiB rule (so it answers a segment behind its last ack once, by wrap-around), drops
 * zero-length segments, closes on any RST, always resets its peer when a socket goes away,
 * and answers unknown tuples by phantun's listener rules. It allocates per packet: it is a
 * test tool, not a fast path.
 *
 * ```ts
 * const peer = new PhantunPeer({ queue: pair.b[0] });
 * peer.listen(4567);
 * const conn = await peer.accept();
 * conn.onDatagram((d) => conn.send(d));
 * ```
 */
import type { DeviceQueue, PacketBatch } from "../device.js";
import { type Endpoint, parseEndpoint, parseIpv4, parseIpv6 } from "../wire/address.js";
import { ParseError } from "../wire/errors.js";
import { buildPacket, SegmentParser } from "../wire/segment.js";
import { TCP_WINDOW_SCALE, TcpFlags } from "../wire/tcp.js";
import {
  type PhantunCloseReason,
  PhantunConnection,
  type PhantunHost,
  type PhantunTuple,
} from "./phantun-connection.js";

export {
  type PhantunCloseReason,
  PhantunConnection,
  type PhantunConnectionCounters,
  type PhantunState,
} from "./phantun-connection.js";

const { SYN, ACK, RST } = TcpFlags;

/** phantun's threshold of unacknowledged bytes for a pure ACK. */
export const PHANTUN_UNACKED_LIMIT = 128 * 1024 * 1024;

/** First and count of phantun's client source ports. */
const EPHEMERAL_FIRST = 32768;
const EPHEMERAL_COUNT = 61000 - 32768;

export interface PhantunPeerOptions {
  /** The device queue the peer reads and writes (it takes over the queue's receive handler). */
  queue: DeviceQueue;
  /** Source address of connections made over IPv4 (needed to `connect` over IPv4). */
  local4?: string;
  /** Source address of connections made over IPv6. */
  local6?: string;
  /** SYN / SYN-ACK transmissions before giving up (phantun: 3). */
  handshakeAttempts?: number;
  /** Wait per attempt, in ms (phantun: 1000). */
  handshakeTimeoutMs?: number;
  /** Close a connection after this long without a packet either way (phantun: 180 s). */
  idleTimeoutMs?: number;
  /** Unacknowledged bytes beyond which a pure ACK goes out (phantun: 128 MiB). */
  unackedLimit?: number;
}

/** What the peer as a whole saw and sent (the connections' counters summed in). */
export interface PhantunPeerCounters {
  packetsReceived: number;
  /** Received packets that are not IPv4/IPv6 TCP or do not parse. */
  malformed: number;
  packetsSent: number;
  /** Packets the device refused to write. */
  writeFailures: number;
  datagramsSent: number;
  datagramsReceived: number;
  /** Zero-length segments received on established connections (never delivered). */
  emptySegments: number;
  /** Pure ACKs sent by the 128 MiB rule, and the part of them drawn by a backwards step. */
  pureAcksSent: number;
  wrapAcksSent: number;
  /** Closing RSTs sent (any connection that went away). */
  rstSent: number;
  /** RST+ACK replies to segments for unknown tuples. */
  rstRepliesSent: number;
  /** RSTs that closed a connection (established or in handshake). */
  rstReceived: number;
  /** RSTs for unknown tuples (ignored). */
  rstIgnored: number;
  connected: number;
  accepted: number;
  handshakesFailed: number;
  /** Closed connections by reason. */
  closed: Record<PhantunCloseReason, number>;
}

/** The peer's counters that are sums over its connections. */
type ConnectionTotals = Pick<
  PhantunPeerCounters,
  "datagramsSent" | "datagramsReceived" | "emptySegments" | "pureAcksSent" | "wrapAcksSent"
>;

/** A phantun-shaped fake-TCP endpoint (client role `connect`, server role `listen`/`accept`). */
export class PhantunPeer implements PhantunHost {
  readonly handshakeAttempts: number;
  readonly handshakeTimeoutMs: number;
  readonly unackedLimit: number;
  readonly idleTimeoutMs: number;
  private readonly queue: DeviceQueue;
  private readonly local4: number | null;
  private readonly local6: readonly number[] | null;
  private readonly table = new Map<string, PhantunConnection>();
  private readonly listening = new Set<number>();
  private readonly ready: PhantunConnection[] = [];
  private readonly waiting: Array<{
    resolve: (c: PhantunConnection) => void;
    reject: (e: Error) => void;
  }> = [];
  private readonly parser = new SegmentParser();
  private readonly sweep: NodeJS.Timeout;
  private isClosed = false;
  private readonly c: Omit<PhantunPeerCounters, keyof ConnectionTotals>;
  /** Counters of connections already forgotten, so totals survive them. */
  private readonly gone: ConnectionTotals = {
    datagramsSent: 0,
    datagramsReceived: 0,
    emptySegments: 0,
    pureAcksSent: 0,
    wrapAcksSent: 0,
  };

  constructor(options: PhantunPeerOptions) {
    this.queue = options.queue;
    this.handshakeAttempts = options.handshakeAttempts ?? 3;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 1000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 180_000;
    this.unackedLimit = options.unackedLimit ?? PHANTUN_UNACKED_LIMIT;
    this.local4 = options.local4 === undefined ? null : mustParse4(options.local4);
    this.local6 = options.local6 === undefined ? null : mustParse6(options.local6);
    this.c = {
      packetsReceived: 0,
      malformed: 0,
      packetsSent: 0,
      writeFailures: 0,
      rstSent: 0,
      rstRepliesSent: 0,
      rstReceived: 0,
      rstIgnored: 0,
      connected: 0,
      accepted: 0,
      handshakesFailed: 0,
      closed: { local: 0, reset: 0, idle: 0, "handshake-failed": 0 },
    };
    this.queue.onReceive((batch) => this.receiveBatch(batch));
    this.sweep = setInterval(() => this.closeIdle(), Math.min(1000, this.idleTimeoutMs));
    this.sweep.unref?.();
  }

  /** Accepts handshakes (a SYN with seq 0) on `port`, like phantun's server. */
  listen(port: number): void {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new RangeError(`invalid listen port ${port}`);
    this.listening.add(port);
  }

  /** The next established passive connection; rejects once the peer is closed. */
  accept(): Promise<PhantunConnection> {
    const c = this.ready.shift();
    if (c !== undefined) return Promise.resolve(c);
    if (this.isClosed) return Promise.reject(new Error("phantun peer is closed"));
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /**
   * Opens a connection like phantun's client: source port from a random start in
   * 32768..60999 counting up to a free tuple, SYN seq 0 with NOP + WS 14, up to
   * `handshakeAttempts` SYNs `handshakeTimeoutMs` apart. Rejects with `code` ETIMEDOUT or
   * ECONNREFUSED (an RST; the peer then resets back, as phantun does).
   */
  connect(remote: Endpoint | string): Promise<PhantunConnection> {
    if (this.isClosed) return Promise.reject(new Error("phantun peer is closed"));
    const ep = parseEndpoint(remote);
    const local = ep.family === 4 ? this.local4 : this.local6;
    if (local === null)
      return Promise.reject(
        new TypeError(`phantun peer: no local IPv${ep.family} address (option local${ep.family})`),
      );
    const remoteAddr = ep.family === 4 ? mustParse4(ep.address) : mustParse6(ep.address);
    const localPort = this.pickPort(local, remoteAddr, ep.port);
    const tuple: PhantunTuple = {
      family: ep.family,
      local,
      remote: remoteAddr,
      localPort,
      remotePort: ep.port,
    };
    const conn = new PhantunConnection(this, tuple, true);
    this.table.set(tupleKey(remoteAddr, ep.port, local, localPort), conn);
    return new Promise((resolve, reject) =>
      conn.startConnect((err) => (err ? reject(err) : resolve(conn))),
    );
  }

  /** Connections in the table (any state), as a snapshot. */
  connections(): PhantunConnection[] {
    return [...this.table.values()];
  }

  /** Totals over the peer's lifetime. */
  counters(): PhantunPeerCounters {
    const sum = { ...this.gone };
    for (const conn of this.table.values()) addCounters(sum, conn);
    return { ...this.c, closed: { ...this.c.closed }, ...sum };
  }

  /** Closes every connection (one RST each) and stops; the queue is left to its owner. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    clearInterval(this.sweep);
    for (const conn of [...this.table.values()]) conn.finish("local");
    for (const w of this.waiting.splice(0)) w.reject(new Error("phantun peer is closed"));
    this.listening.clear();
    this.queue.onReceive(() => {});
  }

  // ---- PhantunHost -----------------------------------------------------------------------

  /** @internal */
  writeSegment(
    conn: PhantunConnection,
    flags: number,
    seq: number,
    ack: number,
    payload?: Uint8Array,
  ): boolean {
    if (flags === RST) this.c.rstSent++;
    return this.write(
      buildPacket({
        src: conn.local as number | number[],
        dst: conn.remote as number | number[],
        srcPort: conn.localPort,
        dstPort: conn.remotePort,
        seq,
        ack,
        flags,
        // phantun puts NOP + window scale 14 on every segment with SYN, nothing elsewhere.
        options: (flags & SYN) !== 0 ? { windowScale: TCP_WINDOW_SCALE } : undefined,
        payload,
      }),
    );
  }

  /** @internal */
  established(conn: PhantunConnection): void {
    if (conn.active) {
      this.c.connected++;
      return;
    }
    this.c.accepted++;
    const waiter = this.waiting.shift();
    if (waiter) waiter.resolve(conn);
    else this.ready.push(conn);
  }

  /** @internal */
  closed(conn: PhantunConnection, reason: PhantunCloseReason): void {
    this.c.closed[reason]++;
    if (reason === "handshake-failed") this.c.handshakesFailed++;
    const key = tupleKey(conn.remote, conn.remotePort, conn.local, conn.localPort);
    if (this.table.get(key) === conn) this.table.delete(key);
    const i = this.ready.indexOf(conn);
    if (i >= 0) this.ready.splice(i, 1);
    addCounters(this.gone, conn);
  }

  // ---- receive ---------------------------------------------------------------------------

  private receiveBatch(batch: PacketBatch): void {
    for (let i = 0; i < batch.count; i++)
      this.receivePacket(batch.buffer, batch.offsets[2 * i], batch.offsets[2 * i + 1]);
  }

  private receivePacket(buf: Buffer, offset: number, length: number): void {
    const p = this.parser;
    if (p.parse(buf, offset, length) !== ParseError.ok) {
      this.c.malformed++;
      return;
    }
    this.c.packetsReceived++;
    const t = p.tcp;
    // phantun looks the tuple up as (destination, source): it never checks the address is its own.
    const local = p.family === 4 ? p.ip4.dst : Array.from(p.ip6.dst);
    const remote = p.family === 4 ? p.ip4.src : Array.from(p.ip6.src);
    const payload = buf.subarray(t.payloadOffset, t.payloadOffset + t.payloadLength);
    const conn = this.table.get(tupleKey(remote, t.srcPort, local, t.dstPort));
    if (conn !== undefined) {
      if ((t.flags & RST) !== 0) this.c.rstReceived++;
      conn.receive(t.flags, t.seq, t.ack, payload);
      return;
    }
    const tuple: PhantunTuple = {
      family: p.family,
      local,
      remote,
      localPort: t.dstPort,
      remotePort: t.srcPort,
    };
    this.receiveUnknown(tuple, t.flags, t.seq, t.ack, payload.length);
  }

  /** phantun's rules for a segment that belongs to no connection. */
  private receiveUnknown(
    tuple: PhantunTuple,
    flags: number,
    seq: number,
    ack: number,
    length: number,
  ): void {
    if (flags === SYN && this.listening.has(tuple.localPort)) {
      if (seq !== 0) {
        this.replyRst(tuple, 0, seq + length + 1);
        return;
      }
      const conn = new PhantunConnection(this, tuple, false);
      this.table.set(tupleKey(tuple.remote, tuple.remotePort, tuple.local, tuple.localPort), conn);
      conn.startAccept();
      return;
    }
    if ((flags & RST) !== 0) {
      this.c.rstIgnored++;
      return;
    }
    this.replyRst(tuple, ack, seq + length);
  }

  private replyRst(tuple: PhantunTuple, seq: number, ack: number): void {
    this.c.rstRepliesSent++;
    this.write(
      buildPacket({
        src: tuple.local as number | number[],
        dst: tuple.remote as number | number[],
        srcPort: tuple.localPort,
        dstPort: tuple.remotePort,
        seq: seq >>> 0,
        ack: ack >>> 0,
        flags: RST | ACK,
      }),
    );
  }

  private write(packet: Buffer): boolean {
    if (this.queue.write(packet)) {
      this.c.packetsSent++;
      return true;
    }
    this.c.writeFailures++;
    return false;
  }

  // ---- helpers ---------------------------------------------------------------------------

  private closeIdle(): void {
    const now = Date.now();
    for (const conn of [...this.table.values()])
      if (conn.established && now - conn.lastActivity >= this.idleTimeoutMs) conn.finish("idle");
  }

  private pickPort(
    local: number | readonly number[],
    remote: number | readonly number[],
    remotePort: number,
  ): number {
    const start = Math.floor(Math.random() * EPHEMERAL_COUNT);
    for (let i = 0; i < EPHEMERAL_COUNT; i++) {
      const port = EPHEMERAL_FIRST + ((start + i) % EPHEMERAL_COUNT);
      if (!this.table.has(tupleKey(remote, remotePort, local, port))) return port;
    }
    throw new Error(`phantun peer: no free source port towards port ${remotePort}`);
  }
}

function tupleKey(
  remote: number | readonly number[],
  remotePort: number,
  local: number | readonly number[],
  localPort: number,
): string {
  return `${String(remote)}/${remotePort}/${String(local)}/${localPort}`;
}

function addCounters(sum: ConnectionTotals, conn: PhantunConnection): void {
  const k = conn.counters;
  sum.datagramsSent += k.datagramsSent;
  sum.datagramsReceived += k.datagramsReceived;
  sum.emptySegments += k.emptySegments;
  sum.pureAcksSent += k.pureAcksSent;
  sum.wrapAcksSent += k.wrapAcksSent;
}

function mustParse4(text: string): number {
  const a = parseIpv4(text);
  if (a === null) throw new TypeError(`invalid IPv4 address "${text}"`);
  return a;
}

function mustParse6(text: string): number[] {
  const a = parseIpv6(text);
  if (a === null) throw new TypeError(`invalid IPv6 address "${text}"`);
  return a;
}
