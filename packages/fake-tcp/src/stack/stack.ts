/**
 * The fake-TCP stack: dispatches received segments to connections by 4-tuple, runs the
 * phantun-compatible handshake and unknown-tuple rules, and drives per-connection timers from
 * one coarse periodic sweep (no timer per connection or per packet).
 */
import type { DeviceQueue, PacketBatch } from "../device.js";
import { KeyedHandshakes, SynRefusal } from "../keyed/keyed-handshake.js";
import { TOKEN_SLOT_MS } from "../keyed/tunnel-key.js";
import {
  type Endpoint,
  formatIpv4,
  formatIpv6,
  parseEndpoint,
  parseIpv4,
  parseIpv6,
} from "../wire/address.js";
import { ParseError, parseErrorNames } from "../wire/errors.js";
import { linuxMss, linuxSynWindow } from "../wire/linux-syn.js";
import { OursOption, scanOursOption } from "../wire/ours-option.js";
import { dataHeaderLength, SegmentParser } from "../wire/segment.js";
import { TcpFlags } from "../wire/tcp.js";
import { BoundedQueue } from "./bounded-queue.js";
import { ChallengeLimiter } from "./challenge-limiter.js";
import { ConnectionTable } from "./conn-table.js";
import {
  answersProbe,
  dataArrived,
  firstKeepaliveSeq,
  isProbeAnswer,
  nextProbeSeq,
  probeAnswered,
  probeSent,
  SWEEP_INTERVAL_MS,
  SweepAction,
  sweepDecision,
  VerifyAction,
  verifyDecision,
} from "./liveness.js";
import { type ResolvedOptions, resolveOptions, type StackOptions } from "./options.js";
import { Admission, PassiveOpens } from "./passive-open.js";
import { type SegmentTuple, SegmentWriter, WriteResult } from "./segment-writer.js";
import { seqAdd, seqGt } from "./seq.js";
import { type CloseCause, type Socket, type SocketHost, SocketState } from "./socket.js";
import { CookieBits } from "./syn-cookies.js";
import { TokenBucket } from "./token-bucket.js";
import { createSocket, pickSourcePort, ReplyTuple } from "./tuple.js";
import {
  judgeRst,
  judgeSegment,
  markSent,
  RstVerdict,
  recordChain,
  startSeqState,
  Verdict,
} from "./validate.js";

const { SYN, ACK, RST } = TcpFlags;
const SYN_ACK = SYN | ACK;
const RST_ACK = RST | ACK;

/** A snapshot of the stack's counters. */
export interface StackStats {
  /** Connections in the table, any state. */
  connections: number;
  /** Established connections waiting for `accept()`. */
  acceptQueue: number;
  packetsReceived: number;
  packetsSent: number;
  /** Received packets dropped as malformed or not ours to parse, by reason. */
  malformed: Record<string, number>;
  /** Packets whose destination is not one of our addresses. */
  notForUs: number;
  /** RST replies sent for unknown tuples and refused handshakes. */
  rstSent: number;
  /** RST replies suppressed by the rate limit. */
  rstRateLimited: number;
  /** RSTs received for unknown tuples (ignored). */
  rstIgnored: number;
  /**
   * Handshakes refused because the connection table was full (and no connection could be
   * evicted) or the accept backlog was full.
   */
  refusedFull: number;
  /** Handshakes refused because their source had `maxConnectionsPerSource` connections. */
  refusedPerSource: number;
  /** Accepted connections closed to make room for a new one (also in `closed.evicted`). */
  evicted: number;
  /** SYN-ACKs sent, each carrying a SYN cookie as its sequence number (no state kept). */
  cookiesSent: number;
  /** Handshake-completing segments (ACK, seq 1) whose cookie was wrong or expired. */
  cookieFailed: number;
  /** Segments ignored during a handshake (wrong flags or ack). */
  handshakeIgnored: number;
  /** Handshakes completed with a peer that proved to be ours (negotiation option). */
  negotiated: number;
  /** SYNs / SYN-ACKs whose options were malformed (handled as from a phantun peer). */
  synOptionsMalformed: number;
  /** Datagrams dropped because they would not fit the MTU. */
  droppedTooBig: number;
  /** Packets the device refused to write. */
  droppedByDevice: number;
  /** Received segments dropped: seq outside the window, no resync chain (see validate.ts). */
  outOfWindow: number;
  /** Received segments dropped: seq in the window, ack not within what we sent recently. */
  badAck: number;
  /** Received segments held back as links of a resync chain (not delivered). */
  resyncChained: number;
  /** Resyncs: a stream that jumped past the window was taken back after a chain. */
  resynced: number;
  /** RSTs ignored: seq outside the window. */
  rstOutOfWindow: number;
  /** RSTs in the window but not exact: answered with a challenge ACK, not closed on. */
  rstChallenged: number;
  /** Challenge ACKs sent (to doubtful RSTs and to segments outside the windows). */
  challengeAcks: number;
  /** Challenge ACKs not sent: per-connection gap or stack-wide budget. */
  challengeRateLimited: number;
  /** Keyed: SYNs without a valid token (no timestamp, another key, a clock too far off). */
  synUnauthenticated: number;
  /** Keyed: SYNs among those from an unkeyed program of ours (its negotiation option). */
  unkeyedPeersRefused: number;
  /** Keyed: SYNs with a valid token first used from another tuple (replays). */
  synReplayed: number;
  /** Keyed: segments for no connection left unanswered (unkeyed, they get an RST). */
  unknownUnanswered: number;
  /** Keyed client: SYN-ACKs whose ISN is not a key holder's answer (ignored). */
  synAckForged: number;
  /** Keyed client: RSTs during the handshake (ignored; an unkeyed server sends them). */
  handshakeRstIgnored: number;
  /** Keyed: RSTs on connections, each starting or joining a fast check (none closes by itself). */
  rstChecked: number;
  /** Keyed: RSTs among `rstChecked` at exactly the peer's seq (unkeyed, they would close). */
  rstExact: number;
  /** Keyed: RSTs disproved by the fast check (the peer answered: someone else sent them). */
  rstForged: number;
  /** Keyed: replay-cache entries overwritten while still needed (cache too small). */
  replayCacheOverwrites: number;
  accepted: number;
  connected: number;
  /** Sockets closed, by cause. */
  closed: Record<CloseCause, number>;
}

type MutableCounters = Omit<
  StackStats,
  "connections" | "acceptQueue" | "malformed" | "replayCacheOverwrites"
>;

/**
 * A userspace fake-TCP stack over one or more device queues.
 *
 * ```ts
 * const stack = new Stack({ queues: tun.queues, local4: "192.168.201.2" });
 * stack.listen(4567);
 * for await (const socket of stack) socket.onDatagram((d) => ...);
 * ```
 */
export class Stack implements SocketHost {
  private readonly opts: ResolvedOptions;
  private readonly queues: DeviceQueue[];
  private readonly local4: number | null;
  private readonly local6: number[] | null;
  private readonly table = new ConnectionTable();
  /** Active opens waiting for their SYN-ACK (a listener keeps no handshake state). */
  private readonly handshaking = new Set<Socket>();
  /** The listener's handshake decisions: SYN cookies, per-source counts, eviction. */
  private readonly opens: PassiveOpens;
  /** Keyed mode's handshake decisions (tokens, replay cache); null without a key. */
  private readonly keyed: KeyedHandshakes | null;
  private readonly listening = new Set<number>();
  private readonly acceptQueue: BoundedQueue<Socket>;
  private readonly parser = new SegmentParser();
  private readonly writer: SegmentWriter;
  private readonly reply: ReplyTuple;
  private readonly rstBucket: TokenBucket;
  private readonly challenges: ChallengeLimiter;
  /** Connections of ours under the fast check after a doubtful RST (see `receiveRst`). */
  private readonly verifying = new Set<Socket>();
  private readonly malformed = new Array<number>(parseErrorNames.length).fill(0);
  private readonly c: MutableCounters;
  private readonly timer: NodeJS.Timeout;
  private clock: number;
  private ticks = 0;
  private isClosed = false;
  private lastTooBigLog = Number.NEGATIVE_INFINITY;
  private tooBigSinceLog = 0;
  private lastUnkeyedLog = Number.NEGATIVE_INFINITY;
  private unkeyedSinceLog = 0;
  private receiveEnd: () => void = () => {};

  constructor(options: StackOptions) {
    this.opts = resolveOptions(options);
    this.writer = new SegmentWriter(
      this.opts.segmentationOffload,
      (t, segments, bytes, ok) => this.runWritten(t as Socket, segments, bytes, ok),
      this.opts.ttl,
    );
    this.reply = new ReplyTuple(this.opts.ttl);
    this.queues = this.opts.queues.slice();
    if (this.opts.local4 !== undefined) {
      const a = parseIpv4(this.opts.local4);
      if (a === null) throw new TypeError(`invalid local4 address "${this.opts.local4}"`);
      this.local4 = a | 0;
    } else this.local4 = null;
    if (this.opts.local6 !== undefined) {
      const a = parseIpv6(this.opts.local6);
      if (a === null) throw new TypeError(`invalid local6 address "${this.opts.local6}"`);
      this.local6 = a.map((w) => w | 0);
    } else this.local6 = null;
    this.clock = Date.now();
    this.rstBucket = new TokenBucket(this.opts.rstRatePerSecond, this.opts.rstBurst, this.clock);
    this.challenges = new ChallengeLimiter(this.opts.challengeRatePerSecond);
    this.acceptQueue = new BoundedQueue(this.opts.acceptBacklog);
    this.opens = new PassiveOpens(this.table, this.opts);
    this.keyed =
      this.opts.key === undefined
        ? null
        : new KeyedHandshakes(
            this.opts.key,
            this.opts.replayCacheMemory ?? this.opts.replayCacheSize,
          );
    this.c = {
      packetsReceived: 0,
      packetsSent: 0,
      notForUs: 0,
      rstSent: 0,
      rstRateLimited: 0,
      rstIgnored: 0,
      refusedFull: 0,
      refusedPerSource: 0,
      evicted: 0,
      cookiesSent: 0,
      cookieFailed: 0,
      handshakeIgnored: 0,
      negotiated: 0,
      synOptionsMalformed: 0,
      droppedTooBig: 0,
      droppedByDevice: 0,
      outOfWindow: 0,
      badAck: 0,
      resyncChained: 0,
      resynced: 0,
      rstOutOfWindow: 0,
      rstChallenged: 0,
      challengeAcks: 0,
      challengeRateLimited: 0,
      synUnauthenticated: 0,
      unkeyedPeersRefused: 0,
      synReplayed: 0,
      unknownUnanswered: 0,
      synAckForged: 0,
      handshakeRstIgnored: 0,
      rstChecked: 0,
      rstExact: 0,
      rstForged: 0,
      accepted: 0,
      connected: 0,
      closed: {
        local: 0,
        "stack-closed": 0,
        "peer-reset": 0,
        "peer-restarted": 0,
        "idle-timeout": 0,
        "dead-peer": 0,
        "handshake-failed": 0,
        evicted: 0,
      },
    };
    this.queues.forEach((q, i) => {
      q.onReceive((batch) => this.receiveBatch(i, batch));
    });
    this.timer = setInterval(() => this.tick(), this.opts.tickMs);
    this.timer.unref();
  }

  /** Accepts passive handshakes on `port` (any of our addresses). */
  listen(port: number): void {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new RangeError(`invalid listen port ${port}`);
    if (this.isClosed) throw new Error("stack is closed");
    this.listening.add(port);
  }

  /** Stops accepting new handshakes on `port`; existing connections are untouched. */
  unlisten(port: number): void {
    this.listening.delete(port);
  }

  /**
   * The next established passive connection that is still open (one reset before it was
   * taken is skipped). Rejects once the stack is closed.
   */
  async accept(): Promise<Socket> {
    const r = await this.nextAccepted();
    if (r.done) throw new Error("stack is closed");
    return r.value;
  }

  /** Iterates accepted connections (open ones, as `accept`) until the stack closes. */
  [Symbol.asyncIterator](): AsyncIterator<Socket> {
    return { next: () => this.nextAccepted() };
  }

  /**
   * A closed socket leaves the queue in `closeSocket`, but one already handed to a waiting
   * consumer can close before that consumer runs (its RST in the same batch): skip those.
   */
  private async nextAccepted(): Promise<IteratorResult<Socket>> {
    for (;;) {
      const r = await this.acceptQueue.next();
      if (r.done || !r.value.closed) return r;
    }
  }

  /**
   * Opens a connection (client handshake: SYN seq 0 with NOP + WS 14; keyed, a Linux-shaped
   * SYN with a random ISN carrying a token). Accepts `{address, port}`, `"a.b.c.d:port"` or
   * `"[v6]:port"`. Resolves once established; rejects with `code` ECONNREFUSED (RST; keyed: no
   * valid answer after all attempts, but RSTs came back), ETIMEDOUT (no answer after all
   * attempts), EADDRNOTAVAIL (no free source port or no local address of that family) or
   * ENOBUFS (connection table full).
   */
  async connect(remote: Endpoint | string): Promise<Socket> {
    if (this.isClosed) throw new Error("stack is closed");
    const ep = parseEndpoint(remote);
    let remoteWords: number[];
    let localWords: number[];
    if (ep.family === 4) {
      if (this.local4 === null)
        throw codeError("EADDRNOTAVAIL", "no local IPv4 address configured (option local4)");
      remoteWords = [parseIpv4(ep.address)! | 0];
      localWords = [this.local4];
    } else {
      if (this.local6 === null)
        throw codeError("EADDRNOTAVAIL", "no local IPv6 address configured (option local6)");
      remoteWords = parseIpv6(ep.address)!.map((w) => w | 0);
      localWords = this.local6;
    }
    if (this.table.size >= this.opts.maxConnections)
      throw codeError("ENOBUFS", `connection table full (${this.opts.maxConnections})`);
    const localPort = pickSourcePort(
      this.table,
      this.opts.portShard,
      ep.family,
      remoteWords,
      localWords,
      ep.port,
      this.opts.sourcePorts,
    );
    if (localPort < 0)
      throw codeError(
        "EADDRNOTAVAIL",
        `no free source port towards port ${ep.port}: all ${-1 - localPort} in use`,
      );
    this.clock = Date.now();
    const s = createSocket(this, {
      family: ep.family,
      remote: remoteWords,
      local: localWords,
      remotePort: ep.port,
      localPort,
      passive: false,
      queueIndex: -1,
      queueCount: this.queues.length,
      queueLimit: this.opts.receiveQueueLimit,
      now: this.clock,
      ttl: this.opts.ttl,
    });
    if (this.keyed) this.keyed.begin(s);
    else s.sndNxt = 1; // the SYN (seq 0) consumes one sequence number
    this.table.insert(s);
    this.handshaking.add(s);
    const p = new Promise<Socket>((resolve, reject) => {
      s.connectResolve = resolve;
      s.connectReject = reject;
    });
    this.sendHandshake(s);
    return p;
  }

  /** Counters and table sizes, as a snapshot. */
  stats(): StackStats {
    const malformed: Record<string, number> = {};
    for (let i = 1; i < parseErrorNames.length; i++)
      malformed[parseErrorNames[i]] = this.malformed[i];
    return {
      ...this.c,
      closed: { ...this.c.closed },
      replayCacheOverwrites: this.keyed?.replayCacheOverwrites ?? 0,
      connections: this.table.size,
      acceptQueue: this.acceptQueue.length,
      malformed,
    };
  }

  /** Every connection currently in the table (any state), as a snapshot. */
  connections(): Socket[] {
    return this.table.snapshot();
  }

  /**
   * Closes every connection (one RST each), ends `accept()`/iteration and stops the timers.
   * The device queues are left open: their owner closes them. Idempotent.
   */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    clearInterval(this.timer);
    // Datagrams held in a run go out before the RSTs, while the queues are still open.
    this.writer.flush();
    for (const s of this.table.snapshot())
      this.closeSocket(s, "stack-closed", "stack closed", true);
    this.acceptQueue.end();
    for (let s = this.acceptQueue.shift(); s !== undefined; s = this.acceptQueue.shift()) {}
    for (const q of this.queues) q.onReceive(() => {});
    this.listening.clear();
  }

  // ---- SocketHost ------------------------------------------------------------------------

  /** @internal */
  sendData(s: Socket, datagram: Uint8Array): boolean {
    if (s.state !== SocketState.established || datagram.length === 0) return false;
    const q = this.queues[s.queueIndex];
    const r = this.writer.writeData(q, s, s.sndNxt, s.rcvHigh, datagram);
    if (r === WriteResult.ok || r === WriteResult.queued) {
      const len = datagram.length;
      s.sndNxt = seqAdd(s.sndNxt, len);
      s.lastSent = this.clock;
      s.unackedBytes = 0; // the segment carries ack = rcvHigh
      // A datagram taken into a run is counted when the run is written (runWritten).
      if (r === WriteResult.ok) this.countSent(s, 1, len);
      return true;
    }
    if (r === WriteResult.tooBig) {
      s.counters.droppedTooBig++;
      this.c.droppedTooBig++;
      this.logTooBig(datagram.length, q.mtu, s.family);
    } else {
      s.counters.droppedByDevice++;
      this.c.droppedByDevice++;
    }
    return false;
  }

  /**
   * Writes now the datagrams held for segmentation offload (see `DeviceQueue.writeSegmented`).
   * Whoever sends a batch of datagrams calls it at the end of the batch; a run left pending is
   * written at the end of the current task anyway.
   */
  flush(): void {
    this.writer.flush();
  }

  /**
   * Calls `handler` after each batch of packets received from a device, once the stack has
   * written what handling the batch produced: the moment to write what the batch's datagrams
   * made on the other side (the programs' UDP runs).
   */
  onReceiveEnd(handler: () => void): void {
    this.receiveEnd = handler;
  }

  /** A coalesced run of `segments` datagrams sent on socket `s` was written (or refused). */
  private runWritten(s: Socket, segments: number, bytes: number, ok: boolean): void {
    if (ok) this.countSent(s, segments, bytes);
    else {
      s.counters.droppedByDevice += segments;
      this.c.droppedByDevice += segments;
    }
  }

  private countSent(s: Socket, segments: number, bytes: number): void {
    s.counters.datagramsSent += segments;
    s.counters.bytesSent += bytes;
    this.c.packetsSent += segments;
  }

  /** @internal */
  closeSocket(s: Socket, cause: CloseCause, message: string, sendRst: boolean): void {
    if (s.state === SocketState.closed) return;
    if (sendRst) this.sendControl(s, RST, s.sndNxt, 0, false);
    this.table.remove(s);
    this.handshaking.delete(s);
    if (s.passive) this.opens.closed(s);
    // Never hand the program a connection that is already gone (it would hold resources
    // for it, e.g. a UDP socket, until its own idle timeout).
    if (s.passive && this.acceptQueue.length > 0) this.acceptQueue.remove(s);
    this.c.closed[cause]++;
    try {
      s.finish({ cause, message });
    } catch (e) {
      // A throwing `close` listener must not break the receive loop or the timer sweep.
      this.opts.log?.("warn", `socket close listener threw: ${(e as Error)?.message ?? e}`);
    }
  }

  // ---- receive path ----------------------------------------------------------------------

  private receiveBatch(queueIndex: number, batch: PacketBatch): void {
    this.clock = Date.now();
    const buf = batch.buffer;
    const offsets = batch.offsets;
    const n = batch.count;
    const sizes = batch.segmentSizes;
    if (sizes === undefined)
      for (let i = 0; i < n; i++)
        this.receivePacket(queueIndex, buf, offsets[2 * i], offsets[2 * i + 1], 0);
    else
      for (let i = 0; i < n; i++)
        this.receivePacket(queueIndex, buf, offsets[2 * i], offsets[2 * i + 1], sizes[i]);
    this.writer.flush();
    this.receiveEnd();
  }

  /**
   * `segmentSize` > 0: a coalesced packet (receive offload) whose payload is several segments.
   * Kept small (the lookup is `findSocket`): V8 inlines a function into its caller only while
   * its bytecode stays under a limit, and this one runs per packet.
   */
  private receivePacket(
    queueIndex: number,
    buf: Buffer,
    offset: number,
    length: number,
    segmentSize: number,
  ): void {
    const err = this.parser.parse(buf, offset, length);
    if (err !== ParseError.ok) {
      this.malformed[err]++;
      return;
    }
    this.c.packetsReceived++;
    const s = this.findSocket();
    if (s === undefined) return;
    if (s === null) this.receiveUnknown(queueIndex, buf, segmentSize);
    else if (s.state === SocketState.established) {
      if (s.restartSynAt !== 0 && this.receiveRestartProof(queueIndex, s, buf, segmentSize)) return;
      this.receiveEstablished(queueIndex, s, buf, segmentSize);
    } else this.receiveSynSent(s, buf);
  }

  /**
   * The connection of the packet just parsed: null when there is none, undefined when the
   * packet is not addressed to us (counted).
   */
  private findSocket(): Socket | null | undefined {
    const p = this.parser;
    const t = p.tcp;
    if (p.family === 4) {
      const dst = p.ip4.dst | 0;
      if (this.local4 !== null && dst !== this.local4) {
        this.c.notForUs++;
        return undefined;
      }
      return this.table.find4(p.ip4.src | 0, dst, t.srcPort, t.dstPort);
    }
    const l = this.local6;
    const d = p.ip6.dst;
    if (
      l !== null &&
      ((d[0] | 0) !== l[0] || (d[1] | 0) !== l[1] || (d[2] | 0) !== l[2] || (d[3] | 0) !== l[3])
    ) {
      this.c.notForUs++;
      return undefined;
    }
    return this.table.find6(p.ip6.src, d, t.srcPort, t.dstPort);
  }

  /**
   * Segments of an established connection: RST and SYN go their own ways; anything else is
   * believed only if its seq and ack pass validation (validate.ts), then delivered and tracked.
   */
  private receiveEstablished(
    queueIndex: number,
    s: Socket,
    buf: Buffer,
    segmentSize: number,
  ): void {
    const t = this.parser.tcp;
    const flags = t.flags;
    const seq = t.seq | 0;
    if ((flags & RST) !== 0) {
      this.receiveRst(s, seq);
      return;
    }
    if ((flags & SYN) !== 0) {
      this.receiveSynWhileEstablished(queueIndex, s, buf, flags, seq);
      return;
    }
    const ack = t.ack | 0;
    const len = t.payloadLength;
    const segments = segmentSize > 0 && len > segmentSize ? Math.ceil(len / segmentSize) : 1;
    if (segments > 1) this.c.packetsReceived += segments - 1;
    const now = this.clock;
    const verdict = judgeSegment(s, seq, ack, len, segments, (flags & ACK) !== 0, now);
    // Segments of the packet that only completed a resync chain, not delivered.
    let skip = 0;
    if (verdict !== Verdict.accept) {
      if (verdict !== Verdict.resync) {
        this.refuseSegment(s, verdict, seq, len, segments, now);
        return;
      }
      skip = segments - recordChain(s, seq, len, segments, now);
      this.c.resynced++;
    }
    s.lastReceived = now;
    s.peerAck = ack;
    if (len === 0) {
      this.receiveEmpty(s, seq, ack);
      return;
    }
    const end = seqAdd(seq, len);
    const advanced = verdict === Verdict.resync || seqGt(end, s.rcvHigh);
    if (advanced) s.rcvHigh = end;
    dataArrived(s, now, advanced);
    if (s.rstsInCheck > 0 && s.verifyProbes === 0) {
      // New data ended the check: the peer is alive, so those RSTs were not its own.
      this.c.rstForged += s.rstsInCheck;
      s.rstsInCheck = 0;
    }
    if (s.unackedBytes === 0) s.unackedSince = now;
    s.unackedBytes += len;
    // The first segment we send after the handshake tells conntrack on the path our window
    // scale (until then it allows only 64 KiB past our last ack): if nothing has gone out yet,
    // acknowledge this first data at once.
    if (
      s.unackedBytes >= this.opts.ackBytes ||
      (s.counters.acksSent |
        s.counters.keepalivesSent |
        s.counters.probesSent |
        s.counters.datagramsSent) ===
        0
    )
      this.sendPureAck(s);
    const start = t.payloadOffset + skip * segmentSize;
    if (segments - skip > 1) {
      this.deliverSegments(s, buf, start, len - skip * segmentSize, segmentSize);
      return;
    }
    try {
      s.deliver(buf.subarray(start, t.payloadOffset + len));
    } catch (e) {
      this.opts.log?.("warn", `datagram handler threw: ${(e as Error)?.message ?? e}`);
    }
  }

  /** A coalesced packet: each `segmentSize` bytes of its payload was one segment, one datagram. */
  private deliverSegments(
    s: Socket,
    buf: Buffer,
    start: number,
    len: number,
    segmentSize: number,
  ): void {
    const end = start + len;
    for (let at = start; at < end && s.state === SocketState.established; at += segmentSize) {
      try {
        s.deliver(buf.subarray(at, Math.min(at + segmentSize, end)));
      } catch (e) {
        this.opts.log?.("warn", `datagram handler threw: ${(e as Error)?.message ?? e}`);
      }
    }
  }

  /**
   * A segment validation did not believe: a link of a resync chain is recorded; anything else
   * is counted and answered with a challenge ACK (rate-limited), which tells a peer that lost
   * track of us where we are (a phantun peer's ack then catches up with what we sent, so its
   * next segments carry fresh acks).
   */
  private refuseSegment(
    s: Socket,
    verdict: number,
    seq: number,
    len: number,
    segments: number,
    now: number,
  ): void {
    if (verdict === Verdict.chained) {
      recordChain(s, seq, len, segments, now);
      this.c.resyncChained += segments;
      return;
    }
    if (verdict === Verdict.badAck) this.c.badAck += segments;
    else this.c.outOfWindow += segments;
    this.sendChallenge(s, now);
  }

  /**
   * An RST closes only when its seq is exactly where the peer is (see validate.ts). One
   * elsewhere in the window draws a challenge ACK (seq = ours, ack = `rcvHigh`): a peer that
   * really lost the connection answers it with an RST carrying exactly that ack as its seq, a
   * live peer ignores it. A peer of ours also gets the fast check: probes `verifyIntervalMs`
   * apart, closing only if none is answered.
   *
   * Keyed, no RST closes by itself, exact or not (an attacker on the path sees our sequence
   * numbers): every one starts the fast check, or joins the one under way; the RSTs of a
   * check that is answered were forged (`rstForged`).
   */
  private receiveRst(s: Socket, seq: number): void {
    if (this.keyed) {
      this.c.rstChecked++;
      if (judgeRst(s, seq) === RstVerdict.close) this.c.rstExact++;
      s.rstsInCheck++;
      this.startCheck(s);
      return;
    }
    const verdict = judgeRst(s, seq);
    if (verdict === RstVerdict.close) {
      this.closeSocket(s, "peer-reset", "reset by peer", false);
      return;
    }
    if (verdict === RstVerdict.outOfWindow) {
      this.c.rstOutOfWindow++;
      return;
    }
    this.c.rstChallenged++;
    this.sendChallenge(s, this.clock);
    if (s.peerIsOurs) this.startCheck(s);
  }

  /** Starts the fast check on `s` (its first probe now) unless one is under way. */
  private startCheck(s: Socket): void {
    if (s.verifyProbes !== 0) return;
    this.verifying.add(s);
    s.verifyProbes = 1;
    this.sendProbe(s, this.clock);
  }

  /**
   * A believed zero-length segment: an answer to our probe (its ack echoes the probe's seq), a
   * probe from a peer of ours (its seq is below what it has sent: answered, rate-limited), or
   * a pure ACK (its seq tells us how far the peer has sent; we never ack beyond it).
   */
  private receiveEmpty(s: Socket, seq: number, ack: number): void {
    if (isProbeAnswer(s, ack)) {
      probeAnswered(s);
      // The peer is there: the RSTs that started the check were not its own.
      this.c.rstForged += s.rstsInCheck;
      s.rstsInCheck = 0;
      return;
    }
    if (seqGt(seq, s.rcvHigh)) s.rcvHigh = seq;
    else if (answersProbe(s, seq, this.clock, this.opts)) {
      s.lastAnswerAt = this.clock;
      s.counters.acksSent++;
      this.sendControl(s, ACK, s.sndNxt, seq, false);
    }
  }

  private receiveSynWhileEstablished(
    queueIndex: number,
    s: Socket,
    buf: Buffer,
    flags: number,
    seq: number,
  ): void {
    if (!s.passive && flags === SYN_ACK && this.parser.tcp.ack === ((s.iss + 1) | 0) >>> 0) {
      // The server missed our ACK and answered our SYN again: acknowledge again.
      this.sendControl(s, ACK, s.sndNxt, s.rcvHigh, false);
      return;
    }
    if (this.keyed) {
      // A keyed SYN on this tuple: the client restarted (on the same port) or a replay. As for
      // an unknown tuple, only a valid token is answered, and the connection is replaced only
      // when the ACK proves the answer (`receiveRestartProof`).
      if (s.passive && flags === SYN && this.listening.has(s.localPort)) {
        if (this.answerKeyedSyn(queueIndex, buf, true)) s.restartSynAt = this.clock;
        return;
      }
      this.c.handshakeIgnored++;
      return;
    }
    if (s.passive && flags === SYN && seq === 0 && this.listening.has(s.localPort)) {
      // The peer restarted, or someone blind to our traffic wants the connection dropped:
      // answer with a cookie of the other generation (never equal to this connection's ISN)
      // and keep the connection; only an ACK proving that cookie replaces it.
      s.restartSynAt = this.clock;
      this.answerSyn(queueIndex, buf, this.opens.restartGeneration(s), true);
      return;
    }
    this.c.handshakeIgnored++;
  }

  /**
   * An established passive tuple that saw a SYN: a segment that proves the cookie we answered
   * it with replaces the connection (the peer restarted). True when it did.
   */
  private receiveRestartProof(
    queueIndex: number,
    s: Socket,
    buf: Buffer,
    segmentSize: number,
  ): boolean {
    if (this.keyed) return this.receiveKeyedRestartProof(queueIndex, s, buf, segmentSize);
    const t = this.parser.tcp;
    const r = this.reply.fill(this.parser);
    const bits = this.opens.provesRestart(s, r, t.flags, t.seq, t.ack, this.clock);
    // Keep the old connection rather than lose both to a full backlog.
    if (bits < 0 || this.acceptQueue.length >= this.opts.acceptBacklog) return false;
    this.closeSocket(s, "peer-restarted", "peer started a new handshake", false);
    this.acceptCookie(queueIndex, buf, segmentSize, bits);
    return true;
  }

  /** The keyed form of `receiveRestartProof`: the ACK of a new keyed handshake on the tuple. */
  private receiveKeyedRestartProof(
    queueIndex: number,
    s: Socket,
    buf: Buffer,
    segmentSize: number,
  ): boolean {
    if (this.clock - s.restartSynAt > (TOKEN_SLOT_MS * 3) / 2) {
      s.restartSynAt = 0; // long past any ACK of that handshake
      return false;
    }
    const t = this.parser.tcp;
    // The connection's own first segments carry its nonce + 1: never a new handshake's.
    if ((t.seq - 1) >>> 0 === s.irs >>> 0) return false;
    const r = this.reply.fill(this.parser);
    if (!this.keyed!.provesAck(r, t.flags, t.seq, t.ack, this.clock)) return false;
    if (this.acceptQueue.length >= this.opts.acceptBacklog) return false;
    this.closeSocket(s, "peer-restarted", "peer started a new handshake", false);
    this.acceptCookie(queueIndex, buf, segmentSize, CookieBits.ours);
    return true;
  }

  /** Client side: waiting for exactly SYN+ACK with ack 1 (any seq: the server's ISN). */
  private receiveSynSent(s: Socket, buf: Buffer): void {
    const t = this.parser.tcp;
    if (this.keyed) {
      this.receiveKeyedSynSent(s);
      return;
    }
    if ((t.flags & RST) !== 0) {
      this.closeSocket(s, "handshake-failed", "connection refused (reset by peer)", false);
      return;
    }
    if (t.flags !== SYN_ACK || t.ack !== 1) {
      this.c.handshakeIgnored++;
      return;
    }
    // Only our server echoes our option; a phantun server answers with NOP + WS 14 alone.
    this.established(s, t.seq, this.peerOption(buf) === OursOption.present);
  }

  /**
   * Keyed client side: waiting for exactly SYN+ACK with ack = our ISN + 1 and, as seq, the ISN
   * a key holder answers our SYN with. Anything else is ignored, RSTs included (a keyed server
   * never sends one: they come from an unkeyed server, reported when the handshake times out,
   * or from someone who wants the handshake dead).
   */
  private receiveKeyedSynSent(s: Socket): void {
    const t = this.parser.tcp;
    if ((t.flags & RST) !== 0) {
      s.resetInHandshake = true;
      this.c.handshakeRstIgnored++;
      return;
    }
    if (t.flags !== SYN_ACK || t.ack !== ((s.iss + 1) | 0) >>> 0) {
      this.c.handshakeIgnored++;
      return;
    }
    if (!this.keyed!.answersSyn(s, t.seq)) {
      this.c.synAckForged++;
      return;
    }
    this.established(s, t.seq, true);
  }

  /** Client side: the handshake completed with a server whose ISN is `serverIsn`. */
  private established(s: Socket, serverIsn: number, peerIsOurs: boolean): void {
    s.irs = serverIsn | 0;
    s.rcvHigh = (serverIsn + 1) | 0;
    s.lastReceived = this.clock;
    s.peerIsOurs = peerIsOurs;
    if (peerIsOurs) this.c.negotiated++;
    if (this.keyed) this.sendKeyedAck(s);
    else this.sendControl(s, ACK, s.sndNxt, s.rcvHigh, false);
    this.handshaking.delete(s);
    s.state = SocketState.established;
    this.sendFirstProbe(s);
    this.c.connected++;
    const resolve = s.connectResolve;
    s.connectResolve = null;
    s.connectReject = null;
    resolve?.(s);
  }

  /**
   * A segment for no connection: phantun's listener rules, with SYN cookies (passive-open.ts).
   * A SYN seq 0 to a listening port is answered statelessly; a segment proving the cookie
   * creates the connection; a failed proof is answered like any unknown tuple. RSTs are
   * rate-limited.
   */
  private receiveUnknown(queueIndex: number, buf: Buffer, segmentSize: number): void {
    const t = this.parser.tcp;
    const flags = t.flags;
    if ((flags & RST) !== 0) {
      this.c.rstIgnored++;
      return;
    }
    if (this.keyed) {
      this.receiveUnknownKeyed(queueIndex, buf, segmentSize);
      return;
    }
    const len = t.payloadLength;
    if (this.listening.has(t.dstPort)) {
      if (flags === SYN) {
        if (t.seq !== 0) this.replyRst(queueIndex, 0, t.seq + len + 1);
        else this.answerSyn(queueIndex, buf, 0, false);
        return;
      }
      if (flags === ACK && t.seq === 1) {
        const r = this.reply.fill(this.parser);
        const bits = this.opens.proven(r, flags, t.seq, t.ack, this.clock);
        if (bits >= 0) {
          this.acceptCookie(queueIndex, buf, segmentSize, bits);
          return;
        }
        this.c.cookieFailed++;
      }
    }
    this.replyRst(queueIndex, t.ack, t.seq + len);
  }

  /**
   * Keyed: a segment for no connection (not an RST). A SYN with a valid token to a listening
   * port is answered (`answerKeyedSyn`), the ACK that proves the answer creates the
   * connection; nothing else is answered at all, so that a port scan, a replayed SYN or a
   * stray segment learns nothing (an unkeyed stack sends RSTs).
   */
  private receiveUnknownKeyed(queueIndex: number, buf: Buffer, segmentSize: number): void {
    const t = this.parser.tcp;
    if (this.listening.has(t.dstPort)) {
      if (t.flags === SYN) {
        this.answerKeyedSyn(queueIndex, buf, false);
        return;
      }
      if (t.flags === ACK) {
        const r = this.reply.fill(this.parser);
        if (this.keyed!.provesAck(r, t.flags, t.seq, t.ack, this.clock)) {
          this.acceptCookie(queueIndex, buf, segmentSize, CookieBits.ours);
          return;
        }
        this.c.cookieFailed++;
      }
    }
    this.c.unknownUnanswered++;
  }

  /**
   * Keyed: answers the SYN being handled with a Linux-shaped SYN-ACK whose ISN is a key
   * holder's answer, if its token is valid and no replay and the connection could be admitted;
   * otherwise nothing is sent. `replacing`: see `PassiveOpens.onSyn`. True when answered.
   */
  private answerKeyedSyn(queueIndex: number, buf: Buffer, replacing: boolean): boolean {
    const t = this.parser.tcp;
    const r = this.reply.fill(this.parser);
    const isn = this.keyed!.answerSyn(r, buf, t, this.clock);
    if (isn < 0) {
      if (isn === SynRefusal.replay) this.c.synReplayed++;
      else this.refuseUnauthenticated(buf);
      this.c.unknownUnanswered++;
      return false;
    }
    const verdict = this.opens.onSyn(r, this.acceptQueue.length, replacing, this.clock);
    if (verdict !== Admission.admit) {
      this.countRefusal(verdict);
      this.c.unknownUnanswered++;
      return false;
    }
    if (r.family === 6) r.flowLabel = this.keyed!.flowLabel(r, t.seq, isn);
    const q = this.queues[queueIndex];
    const mss = linuxMss(r.family, q.mtu);
    const ack = (t.seq + 1) | 0;
    if (
      this.writer.writeLinuxHandshake(q, r, SYN_ACK, isn, ack, mss, this.opts.synWindowScale, 0, 0)
    ) {
      this.c.packetsSent++;
      this.c.cookiesSent++;
      return true;
    }
    this.c.droppedByDevice++;
    return false;
  }

  /**
   * A SYN without a valid token: counted, and logged (rate-limited) when it comes from an
   * unkeyed program of ours, which says so with its negotiation option: that one we can name.
   */
  private refuseUnauthenticated(buf: Buffer): void {
    this.c.synUnauthenticated++;
    const t = this.parser.tcp;
    if (scanOursOption(buf, t.optionsOffset, t.optionsLength) !== OursOption.present) return;
    this.c.unkeyedPeersRefused++;
    this.unkeyedSinceLog++;
    if (!this.opts.log || this.clock - this.lastUnkeyedLog < 10_000) return;
    this.opts.log(
      "warn",
      `refused ${this.unkeyedSinceLog} handshake(s) of an unkeyed fake-tcp client (last from ${formatTuple(this.reply)}): this server has a key and stays silent to it; give the client the same --key-file`,
    );
    this.lastUnkeyedLog = this.clock;
    this.unkeyedSinceLog = 0;
  }

  /**
   * Answers the SYN being handled with a SYN-ACK whose seq is a cookie (echoing our option if
   * the SYN carried it), or refuses it with an RST. `replacing`: see `PassiveOpens.onSyn`.
   */
  private answerSyn(queueIndex: number, buf: Buffer, generation: number, replacing: boolean): void {
    const t = this.parser.tcp;
    const r = this.reply.fill(this.parser);
    const verdict = this.opens.onSyn(r, this.acceptQueue.length, replacing, this.clock);
    if (verdict !== Admission.admit) {
      this.countRefusal(verdict);
      this.replyRst(queueIndex, 0, t.seq + t.payloadLength + 1);
      return;
    }
    const ours = this.peerOption(buf) === OursOption.present;
    const cookie = this.opens.cookie(r, this.clock, ours, generation);
    if (this.writer.writeControl(this.queues[queueIndex], r, SYN_ACK, cookie, 1, true, ours)) {
      this.c.packetsSent++;
      this.c.cookiesSent++;
    } else this.c.droppedByDevice++;
  }

  /**
   * Creates the connection a proven cookie (`bits`) stands for, established, and queues it
   * for `accept()`; or refuses it with an RST like an unknown tuple (see `PassiveOpens.admit`).
   */
  private acceptCookie(queueIndex: number, buf: Buffer, segmentSize: number, bits: number): void {
    const p = this.parser;
    const t = p.tcp;
    const verdict = this.opens.admit(this.reply.fill(p), this.acceptQueue.length, this.clock);
    if (verdict === Admission.evict) {
      const victim = this.opens.victim(this.clock)!;
      this.c.evicted++;
      this.closeSocket(victim, "evicted", "evicted to make room for a new connection", true);
    } else if (verdict !== Admission.admit) {
      this.countRefusal(verdict);
      this.replyRst(queueIndex, t.ack, t.seq + t.payloadLength);
      return;
    }
    const s = createSocket(this, {
      family: p.family,
      remote: p.family === 4 ? [p.ip4.src] : p.ip6.src,
      local: p.family === 4 ? [p.ip4.dst] : p.ip6.dst,
      remotePort: t.srcPort,
      localPort: t.dstPort,
      passive: true,
      queueIndex,
      queueCount: this.queues.length,
      queueLimit: this.opts.receiveQueueLimit,
      now: this.clock,
      ttl: this.opts.ttl,
    });
    s.sndNxt = t.ack | 0; // our ISN (the cookie) + 1: the SYN-ACK consumed one
    s.rcvHigh = t.seq | 0; // the client's ISN (0 unkeyed, its nonce keyed) + 1
    s.irs = (t.seq - 1) | 0;
    this.opens.opened(s, bits, this.clock);
    if (this.keyed && s.family === 6) s.flowLabel = this.keyed.flowLabel(s, s.irs, s.iss);
    this.table.insert(s);
    this.acceptQueue.push(s);
    this.c.accepted++;
    if (s.peerIsOurs) this.c.negotiated++;
    this.sendFirstProbe(s);
    // The first data segment, when it is what completed the handshake, is delivered.
    if (t.payloadLength > 0) this.receiveEstablished(queueIndex, s, buf, segmentSize);
  }

  private countRefusal(verdict: number): void {
    if (verdict === Admission.refusePerSource) this.c.refusedPerSource++;
    else this.c.refusedFull++;
  }

  // ---- send helpers ----------------------------------------------------------------------

  /**
   * (Re)sends our SYN (seq 0: phantun servers need it; our option tells a server of ours who
   * we are) and arms the attempt deadline.
   */
  private sendHandshake(s: Socket): void {
    s.attempts++;
    s.deadline = this.clock + this.opts.handshakeTimeoutMs;
    if (this.keyed) this.sendKeyedSyn(s);
    else this.sendControl(s, SYN, 0, 0, true, true);
  }

  /**
   * Keyed: a SYN shaped as Linux's, ISN = the connection's nonce, TSval = a token for this
   * attempt's slot; the IPv4 ID counts up from a random start, as Linux's does per socket.
   */
  private sendKeyedSyn(s: Socket): void {
    const q = this.queues[s.queueIndex];
    const tsval = this.keyed!.synToken(s, this.clock);
    const id = (s.synIpId + s.attempts - 1) & 0xffff;
    const mss = linuxMss(s.family, q.mtu);
    const wscale = this.opts.synWindowScale;
    if (this.writer.writeLinuxHandshake(q, s, SYN, s.iss, 0, mss, wscale, tsval, id))
      this.c.packetsSent++;
    else this.c.droppedByDevice++;
  }

  /**
   * Keyed: the ACK that completes our handshake, as Linux's (when timestamps were declined):
   * its window is the SYN's, scaled, rounded up; its IPv4 ID the SYN's + 1. Later segments
   * are the unkeyed ones (window 0xFFFF, ID 0).
   */
  private sendKeyedAck(s: Socket): void {
    const q = this.queues[s.queueIndex];
    const scaled = 2 ** this.opts.synWindowScale;
    const window = Math.ceil(linuxSynWindow(linuxMss(s.family, q.mtu)) / scaled);
    const id = (s.synIpId + s.attempts) & 0xffff;
    if (this.writer.writeControl(q, s, ACK, s.sndNxt, s.rcvHigh, false, false, window, id))
      this.c.packetsSent++;
    else this.c.droppedByDevice++;
  }

  /** Whether the SYN or SYN-ACK being handled carries our option; malformed ones are counted. */
  private peerOption(buf: Buffer): number {
    const t = this.parser.tcp;
    const r = scanOursOption(buf, t.optionsOffset, t.optionsLength);
    if (r === OursOption.malformed) this.c.synOptionsMalformed++;
    return r;
  }

  private sendPureAck(s: Socket): void {
    s.unackedBytes = 0;
    s.counters.acksSent++;
    this.sendControl(s, ACK, s.sndNxt, s.rcvHigh, false);
  }

  /** A keepalive: a pure ACK, by default with seq = ours (it keeps the path's state alive). */
  private sendKeepalive(s: Socket, now: number, seq = s.sndNxt): void {
    s.unackedBytes = 0;
    s.lastProbeAt = now;
    s.counters.keepalivesSent++;
    this.sendControl(s, ACK, seq, s.rcvHigh, false);
  }

  /** A challenge ACK (seq = ours, ack = `rcvHigh`), within the per-connection and global limits. */
  private sendChallenge(s: Socket, now: number): void {
    if (now - s.lastChallengeAt < this.opts.challengeIntervalMs || !this.challenges.take(now)) {
      this.c.challengeRateLimited++;
      return;
    }
    s.lastChallengeAt = now;
    s.unackedBytes = 0;
    this.c.challengeAcks++;
    this.sendControl(s, ACK, s.sndNxt, s.rcvHigh, false);
  }

  private sendControl(
    s: Socket,
    flags: number,
    seq: number,
    ack: number,
    syn: boolean,
    ours = false,
  ): void {
    if (this.writer.writeControl(this.queues[s.queueIndex], s, flags, seq | 0, ack | 0, syn, ours))
      this.c.packetsSent++;
    else this.c.droppedByDevice++;
  }

  /** RST+ACK to the sender of the packet being handled (rate-limited; keyed: never). */
  private replyRst(queueIndex: number, seq: number, ack: number): void {
    if (this.keyed) {
      this.c.unknownUnanswered++;
      return;
    }
    if (!this.rstBucket.take(this.clock)) {
      this.c.rstRateLimited++;
      return;
    }
    const r = this.reply.fill(this.parser);
    if (this.writer.writeControl(this.queues[queueIndex], r, RST_ACK, seq | 0, ack | 0, false)) {
      this.c.packetsSent++;
      this.c.rstSent++;
    } else this.c.droppedByDevice++;
  }

  // ---- timers ----------------------------------------------------------------------------

  /**
   * The periodic sweep. Handshakes are checked every tick; established connections (acks,
   * keepalive, idle) about every 500 ms, which is plenty for second-scale timers and keeps
   * 10,000+ connections cheap.
   */
  private tick(): void {
    this.clock = Date.now();
    const now = this.clock;
    if (this.handshaking.size > 0) {
      const expired: Socket[] = [];
      for (const s of this.handshaking) if (now >= s.deadline) expired.push(s);
      for (const s of expired) {
        if (s.attempts < this.opts.handshakeAttempts) this.sendHandshake(s);
        else if (this.keyed)
          // A Linux client that gives up sends nothing more; nor does a keyed one.
          this.closeSocket(s, "handshake-failed", keyedTimeoutMessage(s), false);
        else
          this.closeSocket(
            s,
            "handshake-failed",
            `no answer after ${s.attempts} attempts (timed out)`,
            true,
          );
      }
    }
    if (this.verifying.size > 0) this.sweepVerify(now);
    const every = Math.max(1, Math.round(SWEEP_INTERVAL_MS / this.opts.tickMs));
    if (++this.ticks % every !== 0) return;
    const closing: Array<[Socket, CloseCause]> = [];
    this.table.forEach((s) => {
      if (s.state !== SocketState.established) return;
      markSent(s);
      const action = sweepDecision(s, now, this.opts);
      if (action === SweepAction.none) return;
      if (action === SweepAction.closeIdle || action === SweepAction.closeDead) {
        closing.push([s, action === SweepAction.closeIdle ? "idle-timeout" : "dead-peer"]);
        return;
      }
      if ((action & SweepAction.ack) !== 0) this.sendPureAck(s);
      if ((action & SweepAction.keepalive) !== 0) this.sendKeepalive(s, now);
      if ((action & SweepAction.probe) !== 0) this.sendProbe(s, now);
    });
    for (const [s, cause] of closing)
      this.closeSocket(
        s,
        cause,
        cause === "idle-timeout"
          ? `no traffic for ${this.opts.idleTimeoutMs} ms`
          : `peer stopped answering keepalive probes (${this.opts.deadPeerProbes} unanswered)`,
        true,
      );
  }

  /** The fast checks after doubtful RSTs (every tick: their probes are a few hundred ms apart). */
  private sweepVerify(now: number): void {
    for (const s of this.verifying) {
      if (s.state !== SocketState.established || s.verifyProbes === 0) {
        this.verifying.delete(s);
        continue;
      }
      const action = verifyDecision(s, now, this.opts);
      if (action === VerifyAction.probe) {
        s.verifyProbes++;
        this.sendProbe(s, now);
      } else if (action === VerifyAction.close) {
        this.verifying.delete(s);
        this.closeSocket(
          s,
          "peer-reset",
          `reset by peer (confirmed: ${s.verifyProbes} probes unanswered)`,
          false,
        );
      }
    }
  }

  /**
   * Called once when a connection becomes established: starts the sequence windows and, with
   * keepalives on, sends a keepalive at once. That is the first segment after the handshake in
   * our direction, from which Linux conntrack on the path learns our window scale (until then
   * it judges data by the unscaled window); towards a phantun server it also draws one
   * segment back, for the same reason in the other direction (see `firstKeepaliveSeq`).
   */
  private sendFirstProbe(s: Socket): void {
    startSeqState(s);
    if (this.opts.keepaliveIntervalMs <= 0) return;
    this.sendKeepalive(s, this.clock, firstKeepaliveSeq(s));
  }

  /** A probe to a peer of ours: a pure ACK with an old seq, which it answers (liveness.ts). */
  private sendProbe(s: Socket, now: number): void {
    const seq = nextProbeSeq(s);
    probeSent(s, seq, now);
    this.sendControl(s, ACK, seq, s.rcvHigh, false);
  }

  // ---- helpers ---------------------------------------------------------------------------

  private logTooBig(length: number, mtu: number, family: 4 | 6): void {
    this.tooBigSinceLog++;
    if (!this.opts.log || this.clock - this.lastTooBigLog < 10_000) return;
    const max = mtu - dataHeaderLength(family);
    this.opts.log(
      "warn",
      `dropped ${this.tooBigSinceLog} datagram(s) too big for the MTU (last: ${length} bytes, max ${max} over IPv${family} with MTU ${mtu})`,
    );
    this.lastTooBigLog = this.clock;
    this.tooBigSinceLog = 0;
  }
}

/** Why a keyed handshake failed, for the log: the causes the client can tell apart. */
function keyedTimeoutMessage(s: Socket): string {
  if (s.resetInHandshake)
    return `no keyed answer after ${s.attempts} attempts, but the server reset the handshake: it has no key (phantun, or fake-tcp without --key-file); a keyed client talks only to a keyed server`;
  return `no answer after ${s.attempts} attempts (timed out): the server is down or unreachable, or its key differs, or one of the clocks is more than a minute off (a keyed server is silent to all of these)`;
}

/** `address:port` of the remote end of `t`, for log lines. */
function formatTuple(t: SegmentTuple): string {
  if (t.family === 4) return `${formatIpv4(t.r0 >>> 0)}:${t.remotePort}`;
  return `[${formatIpv6([t.r0 >>> 0, t.r1 >>> 0, t.r2 >>> 0, t.r3 >>> 0])}]:${t.remotePort}`;
}

function codeError(code: string, message: string): Error {
  const e = new Error(message) as Error & { code: string };
  e.code = code;
  return e;
}
