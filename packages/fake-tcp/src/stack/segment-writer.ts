/**
 * Builds and writes the segments the stack sends, into preallocated header buffers. Without
 * segmentation offload payloads go to the device by reference (`writeGather`), never copied.
 *
 * Data segments reuse a per-family header template: when the previous data segment went to the
 * same socket, only length, IPv4 checksum, seq, ack and TCP checksum are rewritten.
 *
 * On a device with segmentation offload, consecutive datagrams of one socket sent in the same
 * task are coalesced into one write that the kernel splits into the same segments, with
 * the same sequence numbers, that single writes would have made: one system call and one
 * trip through the kernel's forwarding path per run instead of per datagram. Each datagram is
 * copied once, into the run.
 */
import type { DeviceQueue } from "../device.js";
import { finishChecksum, foldSum, sumWords } from "../wire/checksum.js";
import { emitIpv4Header, IPV4_HEADER_LENGTH, setIpv4TotalLength } from "../wire/ipv4.js";
import { emitIpv6Header, IPV6_HEADER_LENGTH, setIpv6PayloadLength } from "../wire/ipv6.js";
import {
  emitLinuxSynAckOptions,
  emitLinuxSynOptions,
  LINUX_SYN_ACK_OPTIONS_LENGTH,
  LINUX_SYN_OPTIONS_LENGTH,
  linuxSynWindow,
} from "../wire/linux-syn.js";
import { TCP_SYN_OURS_HEADER_LENGTH } from "../wire/ours-option.js";
import { dataHeaderLength, ipHeaderLength } from "../wire/segment.js";
import {
  emitTcpHeader,
  setTcpChecksum,
  setTcpHeaderLength,
  setTcpSeqAck,
  setTcpWindow,
  TCP_HEADER_LENGTH,
  TCP_SYN_HEADER_LENGTH,
  TCP_WINDOW,
  TcpFlags,
} from "../wire/tcp.js";
import { RunBuffer } from "./run-buffer.js";

/** The addressing a segment needs; a Socket satisfies it. Addresses are int32 words. */
export interface SegmentTuple {
  readonly family: 4 | 6;
  readonly r0: number;
  readonly r1: number;
  readonly r2: number;
  readonly r3: number;
  readonly l0: number;
  readonly l1: number;
  readonly l2: number;
  readonly l3: number;
  readonly remotePort: number;
  readonly localPort: number;
  /** Pseudo-header sum without the length (`ipv4PseudoBase` / `ipv6PseudoBase`). */
  readonly pseudoBase: number;
  /** IPv4 header sum without the total length (`ipv4HeaderBaseSum`); unused for IPv6. */
  readonly ipBase: number;
  /** IPv6 flow label of every segment (keyed mode; absent: 0). */
  readonly flowLabel?: number;
}

/**
 * Outcome of a data write: written now (`ok`), taken into a run and reported to the
 * {@link RunWrittenHandler} when the run is written (`queued`), or dropped.
 */
export const WriteResult = { ok: 0, tooBig: 1, refused: 2, queued: 3 } as const;

/**
 * Most segments one coalesced write carries. At 1400-byte datagrams the device's payload limit
 * ends a run first (a TUN queue's, from the 16-bit IP length: 46 segments); smaller datagrams
 * stop here, which bounds the burst one write puts on the path.
 */
export const MAX_RUN_SEGMENTS = 64;

const EMPTY = new Uint8Array(0);

/**
 * Called when a coalesced run is written: `segments` datagrams (`bytes` of payload) of
 * `tuple` (the socket they were sent on) were sent, or lost when `ok` is false (the device
 * refused them).
 */
export type RunWrittenHandler = (
  tuple: SegmentTuple,
  segments: number,
  bytes: number,
  ok: boolean,
) => void;

export class SegmentWriter {
  private readonly data4 = Buffer.alloc(dataHeaderLength(4));
  private readonly data6 = Buffer.alloc(dataHeaderLength(6));
  /** Control segments: the largest is an IPv6 keyed SYN (40 + 20 + 20 bytes of options). */
  private readonly control = Buffer.alloc(
    IPV6_HEADER_LENGTH + TCP_HEADER_LENGTH + LINUX_SYN_OPTIONS_LENGTH,
  );
  private readonly local = [0, 0, 0, 0];
  private readonly remote = [0, 0, 0, 0];
  private template4: SegmentTuple | null = null;
  private template6: SegmentTuple | null = null;
  /** The TCP length the IPv4 template's total length and header checksum were written for. */
  private templateLength4 = -1;
  // The run being coalesced: consecutive datagrams of one socket, written as one
  // segmentation-offloaded packet at the end of the current task, or as soon as the next
  // datagram cannot join it. What identifies the run is kept here, the payloads in `run`. The
  // most payload a run carries is the device's (`DeviceQueue.maxSegmentedPayload`): the
  // staging buffer grows to it on the first run.
  private readonly run = new RunBuffer(0, MAX_RUN_SEGMENTS, () => this.flush());
  private runLimit = 0;
  private runQueue: DeviceQueue | null = null;
  private runTuple: SegmentTuple | null = null;
  private runSeq = 0;
  private runAck = 0;
  private runNextSeq = 0;

  /**
   * `coalesce` false: never make runs, every data segment is written on its own. `ttl`: the
   * IPv4 TTL and IPv6 hop limit of every segment (the tuples' `ipBase` must include it).
   */
  constructor(
    private readonly coalesce = true,
    private readonly onRunWritten: RunWrittenHandler = () => {},
    private readonly ttl = 64,
  ) {}

  /**
   * Sends one data segment (flag ACK only) carrying `payload`. On a queue with segmentation
   * offload the datagram is copied into the current run (`queued`) and written at the next
   * {@link flush} (at the latest at the end of this task), then reported to `onRunWritten`;
   * otherwise it is written now, by reference.
   */
  writeData(
    q: DeviceQueue,
    t: SegmentTuple,
    seq: number,
    ack: number,
    payload: Uint8Array,
  ): number {
    if (dataHeaderLength(t.family) + payload.length > q.mtu) return WriteResult.tooBig;
    if (this.coalesce && q.segmentationOffload === true && q.checksumOffload) {
      this.append(q, t, seq, ack, payload);
      return WriteResult.queued;
    }
    if (this.run.count > 0) this.flush();
    return this.writeOne(q, t, seq, ack, payload) ? WriteResult.ok : WriteResult.refused;
  }

  /**
   * Writes the pending run, if any. The stack calls it at the end of every received batch and
   * its users at the end of theirs; the end of the task writes a forgotten run (a safety net).
   */
  flush(): void {
    const count = this.run.count;
    if (count === 0) return;
    const q = this.runQueue!;
    const t = this.runTuple!;
    const segmentSize = this.run.segmentSize;
    const payload = this.run.take();
    this.runQueue = null;
    this.runTuple = null;
    let ok: boolean;
    if (count === 1) ok = this.writeOne(q, t, this.runSeq, this.runAck, payload);
    else {
      const h = this.dataHeader(t, this.runSeq, this.runAck, payload, true);
      ok = q.writeSegmented!(h, payload, segmentSize);
    }
    this.onRunWritten(t, count, payload.length, ok);
  }

  private append(
    q: DeviceQueue,
    t: SegmentTuple,
    seq: number,
    ack: number,
    payload: Uint8Array,
  ): void {
    const run = this.run;
    if (
      run.count > 0 &&
      (this.runTuple !== t ||
        this.runQueue !== q ||
        seq !== this.runNextSeq ||
        ack !== this.runAck ||
        !run.fits(payload.length, this.runLimit))
    )
      this.flush();
    if (run.count === 0) {
      this.runQueue = q;
      this.runTuple = t;
      this.runSeq = seq;
      this.runAck = ack;
      this.runLimit = q.maxSegmentedPayload!(t.family);
      run.reserve(Math.max(this.runLimit, payload.length));
    }
    run.push(payload);
    this.runNextSeq = (seq + payload.length) | 0;
  }

  /** Writes one data segment now, payload by reference. */
  private writeOne(
    q: DeviceQueue,
    t: SegmentTuple,
    seq: number,
    ack: number,
    payload: Uint8Array,
  ): boolean {
    const offload = q.checksumOffload;
    return q.writeGather(this.dataHeader(t, seq, ack, payload, offload), payload, offload);
  }

  /**
   * The IP + TCP header of a data segment carrying `payload` (which may be a whole run), in
   * the per-family template. With `offload` the TCP checksum holds only the pseudo-header seed.
   */
  private dataHeader(
    t: SegmentTuple,
    seq: number,
    ack: number,
    payload: Uint8Array,
    offload: boolean,
  ): Buffer {
    const tcpLength = TCP_HEADER_LENGTH + payload.length;
    let h: Buffer;
    let ip: number;
    if (t.family === 4) {
      h = this.data4;
      ip = IPV4_HEADER_LENGTH;
      // The total length and the header checksum covering it change only with the length:
      // same-size datagrams (the usual bulk traffic) skip rewriting them.
      if (this.template4 !== t) {
        this.emitTemplate(h, t, tcpLength);
        this.template4 = t;
        this.templateLength4 = tcpLength;
      } else if (this.templateLength4 !== tcpLength) {
        setIpv4TotalLength(h, 0, ip + tcpLength, t.ipBase);
        this.templateLength4 = tcpLength;
      }
    } else {
      h = this.data6;
      ip = IPV6_HEADER_LENGTH;
      if (this.template6 !== t) {
        this.emitTemplate(h, t, tcpLength);
        this.template6 = t;
      }
      setIpv6PayloadLength(h, 0, tcpLength);
    }
    setTcpSeqAck(h, ip, seq, ack);
    setTcpChecksum(
      h,
      ip,
      offload ? foldSum(t.pseudoBase + tcpLength) : fullTcpChecksum(h, ip, t, payload, tcpLength),
    );
    return h;
  }

  /**
   * Writes a segment without payload (SYN, SYN-ACK, ACK, RST...). `synOptions` adds NOP + WS 14,
   * `ours` (with `synOptions`) our negotiation option after them. `window` and `ipId` replace
   * the window 0xFFFF and IPv4 ID 0 of every other segment (a keyed handshake's ACK). Returns
   * false when the device refused it.
   */
  writeControl(
    q: DeviceQueue,
    t: SegmentTuple,
    flags: number,
    seq: number,
    ack: number,
    synOptions: boolean,
    ours = false,
    window = TCP_WINDOW,
    ipId = 0,
  ): boolean {
    // Control segments follow the data sent before them (an RST after the last datagram).
    if (this.run.count > 0) this.flush();
    const h = this.control;
    const ip = ipHeaderLength(t.family);
    const tcpLength = synOptions
      ? ours
        ? TCP_SYN_OURS_HEADER_LENGTH
        : TCP_SYN_HEADER_LENGTH
      : TCP_HEADER_LENGTH;
    this.emitHeaders(h, t, flags, seq, ack, synOptions, ours, tcpLength, ipId);
    if (window !== TCP_WINDOW) setTcpWindow(h, ip, window);
    return this.writeControlSegment(q, t, h, ip, tcpLength);
  }

  /**
   * Writes a keyed-mode SYN or SYN-ACK shaped as Linux's (see wire/linux-syn.ts): the window
   * Linux announces for `mss`, and with `flags` SYN the SYN's options carrying `tsval` (IPv4 ID
   * `ipId`, which Linux randomises per connection), with SYN+ACK the SYN-ACK's (timestamps
   * declined, ID 0 as Linux's). Returns false when the device refused it.
   */
  writeLinuxHandshake(
    q: DeviceQueue,
    t: SegmentTuple,
    flags: number,
    seq: number,
    ack: number,
    mss: number,
    windowScale: number,
    tsval: number,
    ipId: number,
  ): boolean {
    if (this.run.count > 0) this.flush();
    const h = this.control;
    const syn = flags === TcpFlags.SYN;
    const optionsLength = syn ? LINUX_SYN_OPTIONS_LENGTH : LINUX_SYN_ACK_OPTIONS_LENGTH;
    const tcpLength = TCP_HEADER_LENGTH + optionsLength;
    const ip = this.emitIp(h, t, tcpLength, syn ? ipId : 0);
    emitTcpHeader(h, ip, t.localPort, t.remotePort, seq, ack, flags, false);
    setTcpHeaderLength(h, ip, tcpLength);
    setTcpWindow(h, ip, linuxSynWindow(mss));
    if (syn) emitLinuxSynOptions(h, ip + TCP_HEADER_LENGTH, mss, tsval, windowScale);
    else emitLinuxSynAckOptions(h, ip + TCP_HEADER_LENGTH, mss, windowScale);
    return this.writeControlSegment(q, t, h, ip, tcpLength);
  }

  /** Fills in the TCP checksum of the control segment built in `h` and writes it. */
  private writeControlSegment(
    q: DeviceQueue,
    t: SegmentTuple,
    h: Buffer,
    ip: number,
    tcpLength: number,
  ): boolean {
    const offload = q.checksumOffload;
    const ck = offload
      ? foldSum(t.pseudoBase + tcpLength)
      : finishChecksum(sumWords(h, ip, tcpLength, t.pseudoBase + tcpLength));
    setTcpChecksum(h, ip, ck);
    return q.writeGather(h.subarray(0, ip + tcpLength), EMPTY, offload);
  }

  private emitTemplate(h: Buffer, t: SegmentTuple, tcpLength: number): void {
    this.emitHeaders(h, t, TcpFlags.ACK, 0, 0, false, false, tcpLength);
  }

  private emitHeaders(
    h: Buffer,
    t: SegmentTuple,
    flags: number,
    seq: number,
    ack: number,
    synOptions: boolean,
    ours: boolean,
    tcpLength: number,
    ipId = 0,
  ): void {
    const ip = this.emitIp(h, t, tcpLength, ipId);
    emitTcpHeader(h, ip, t.localPort, t.remotePort, seq, ack, flags, synOptions, ours);
  }

  /** The IP header of a segment of `t` with a TCP part of `tcpLength` bytes; its length. */
  private emitIp(h: Buffer, t: SegmentTuple, tcpLength: number, ipId: number): number {
    if (t.family === 4) {
      return emitIpv4Header(h, 0, t.l0 >>> 0, t.r0 >>> 0, tcpLength, t.ipBase, ipId, this.ttl);
    } else {
      const l = this.local;
      const r = this.remote;
      l[0] = t.l0;
      l[1] = t.l1;
      l[2] = t.l2;
      l[3] = t.l3;
      r[0] = t.r0;
      r[1] = t.r1;
      r[2] = t.r2;
      r[3] = t.r3;
      return emitIpv6Header(h, 0, l, r, tcpLength, t.flowLabel ?? 0, this.ttl);
    }
  }
}

/**
 * The complete TCP checksum of the data segment whose header is at `h[ip]` (for a device
 * without checksum offload). Kept out of `dataHeader`: V8 inlines the per-datagram header
 * writes into the send path only while their bytecode stays small.
 */
function fullTcpChecksum(
  h: Buffer,
  ip: number,
  t: SegmentTuple,
  payload: Uint8Array,
  tcpLength: number,
): number {
  setTcpChecksum(h, ip, 0);
  const headerSum = sumWords(h, ip, TCP_HEADER_LENGTH, t.pseudoBase + tcpLength);
  return finishChecksum(sumWords(payload, 0, payload.length, headerSum));
}
