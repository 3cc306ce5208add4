/**
 * Builds and writes the segments the stack sends, into preallocated header buffers: payloads
 * are passed to the device by reference (`writeGather`), never copied.
 *
 * Data segments reuse a per-family header template: when the previous data segment went to the
 * same socket, only length, IPv4 checksum, seq, ack and TCP checksum are rewritten.
 */
import type { DeviceQueue } from "../device.js";
import { finishChecksum, foldSum, sumWords } from "../wire/checksum.js";
import { emitIpv4Header } from "../wire/ipv4.js";
import { emitIpv6Header } from "../wire/ipv6.js";
import { emitTcpHeader, TcpFlags } from "../wire/tcp.js";

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
}

/** Outcome of a data write. */
export const WriteResult = { ok: 0, tooBig: 1, refused: 2 } as const;

const EMPTY = new Uint8Array(0);

export class SegmentWriter {
  private readonly data4 = Buffer.alloc(40);
  private readonly data6 = Buffer.alloc(60);
  private readonly control = Buffer.alloc(64);
  private readonly local = [0, 0, 0, 0];
  private readonly remote = [0, 0, 0, 0];
  private template4: SegmentTuple | null = null;
  private template6: SegmentTuple | null = null;

  /** Writes one data segment (flag ACK only) carrying `payload`. */
  writeData(
    q: DeviceQueue,
    t: SegmentTuple,
    seq: number,
    ack: number,
    payload: Uint8Array,
  ): number {
    const len = payload.length;
    const tcpLength = 20 + len;
    let h: Buffer;
    let ip: number;
    if (t.family === 4) {
      h = this.data4;
      ip = 20;
      if (ip + tcpLength > q.mtu) return WriteResult.tooBig;
      if (this.template4 !== t) {
        this.emitTemplate(h, t, tcpLength);
        this.template4 = t;
      }
      const total = ip + tcpLength;
      h[2] = total >>> 8;
      h[3] = total;
      const ipSum = finishChecksum(t.ipBase + total);
      h[10] = ipSum >>> 8;
      h[11] = ipSum;
    } else {
      h = this.data6;
      ip = 40;
      if (ip + tcpLength > q.mtu) return WriteResult.tooBig;
      if (this.template6 !== t) {
        this.emitTemplate(h, t, tcpLength);
        this.template6 = t;
      }
      h[4] = tcpLength >>> 8;
      h[5] = tcpLength;
    }
    h[ip + 4] = seq >>> 24;
    h[ip + 5] = seq >>> 16;
    h[ip + 6] = seq >>> 8;
    h[ip + 7] = seq;
    h[ip + 8] = ack >>> 24;
    h[ip + 9] = ack >>> 16;
    h[ip + 10] = ack >>> 8;
    h[ip + 11] = ack;
    const offload = q.checksumOffload;
    let ck: number;
    if (offload) ck = foldSum(t.pseudoBase + tcpLength);
    else {
      h[ip + 16] = 0;
      h[ip + 17] = 0;
      ck = finishChecksum(sumWords(payload, 0, len, sumWords(h, ip, 20, t.pseudoBase + tcpLength)));
    }
    h[ip + 16] = ck >>> 8;
    h[ip + 17] = ck;
    return q.writeGather(h, payload, offload) ? WriteResult.ok : WriteResult.refused;
  }

  /**
   * Writes a segment without payload (SYN, SYN-ACK, ACK, RST...). `synOptions` adds NOP + WS 14.
   * Returns false when the device refused it.
   */
  writeControl(
    q: DeviceQueue,
    t: SegmentTuple,
    flags: number,
    seq: number,
    ack: number,
    synOptions: boolean,
  ): boolean {
    const h = this.control;
    const ip = t.family === 4 ? 20 : 40;
    const tcpLength = synOptions ? 24 : 20;
    this.emitHeaders(h, t, flags, seq, ack, synOptions, tcpLength);
    const offload = q.checksumOffload;
    const ck = offload
      ? foldSum(t.pseudoBase + tcpLength)
      : finishChecksum(sumWords(h, ip, tcpLength, t.pseudoBase + tcpLength));
    h[ip + 16] = ck >>> 8;
    h[ip + 17] = ck;
    return q.writeGather(h.subarray(0, ip + tcpLength), EMPTY, offload);
  }

  private emitTemplate(h: Buffer, t: SegmentTuple, tcpLength: number): void {
    this.emitHeaders(h, t, TcpFlags.ACK, 0, 0, false, tcpLength);
  }

  private emitHeaders(
    h: Buffer,
    t: SegmentTuple,
    flags: number,
    seq: number,
    ack: number,
    synOptions: boolean,
    tcpLength: number,
  ): void {
    let ip: number;
    if (t.family === 4) {
      ip = emitIpv4Header(h, 0, t.l0 >>> 0, t.r0 >>> 0, tcpLength, t.ipBase);
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
      ip = emitIpv6Header(h, 0, l, r, tcpLength);
    }
    emitTcpHeader(h, ip, t.localPort, t.remotePort, seq, ack, flags, synOptions);
  }
}
