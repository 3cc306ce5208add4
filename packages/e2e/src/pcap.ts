/**
 * Reading classic pcap (Ethernet link type) as the rig's captures and the on-path injector
 * need it: each IPv4 TCP frame as a summary of every header field (the rest of the frame may
 * be cut by the snap length; lengths come from the headers), from a whole file or a stream.
 */

/** Every field of an IPv4 TCP packet's headers, options as raw bytes. */
export interface TcpPacket {
  /** Capture time, ms since the epoch. */
  readonly at: number;
  readonly tos: number;
  readonly totalLength: number;
  readonly ipId: number;
  /** The IPv4 flags and fragment offset field (0x4000: DF). */
  readonly fragment: number;
  readonly ttl: number;
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly seq: number;
  readonly ack: number;
  /** TCP header length in bytes. */
  readonly headerLength: number;
  readonly flags: number;
  readonly window: number;
  readonly urgent: number;
  readonly options: Buffer;
  readonly payloadLength: number;
  /** The IP packet as captured (cut at the snap length). */
  readonly bytes: Buffer;
}

const ipv4 = (b: Buffer, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/** The TCP packet in an Ethernet frame `frame[0, length)`, or null for anything else. */
export function parseFrame(frame: Buffer, at: number): TcpPacket | null {
  if (frame.length < 14 + 20 || frame.readUInt16BE(12) !== 0x0800) return null;
  const ip = 14;
  if (frame[ip] >>> 4 !== 4 || frame[ip + 9] !== 6) return null;
  const ihl = (frame[ip] & 15) * 4;
  const tcp = ip + ihl;
  if (frame.length < tcp + 20) return null;
  const headerLength = (frame[tcp + 12] >>> 4) * 4;
  const totalLength = frame.readUInt16BE(ip + 2);
  return {
    at,
    tos: frame[ip + 1],
    totalLength,
    ipId: frame.readUInt16BE(ip + 4),
    fragment: frame.readUInt16BE(ip + 6),
    ttl: frame[ip + 8],
    src: ipv4(frame, ip + 12),
    dst: ipv4(frame, ip + 16),
    sport: frame.readUInt16BE(tcp),
    dport: frame.readUInt16BE(tcp + 2),
    seq: frame.readUInt32BE(tcp + 4),
    ack: frame.readUInt32BE(tcp + 8),
    headerLength,
    flags: frame[tcp + 13],
    window: frame.readUInt16BE(tcp + 14),
    urgent: frame.readUInt16BE(tcp + 18),
    options: Buffer.from(frame.subarray(tcp + 20, Math.min(frame.length, tcp + headerLength))),
    payloadLength: Math.max(0, totalLength - ihl - headerLength),
    bytes: Buffer.from(frame.subarray(ip)),
  };
}

/**
 * Feeds pcap bytes as they come (a `tcpdump -w -` pipe) and calls `onPacket` for every IPv4
 * TCP frame. `push` copies nothing it does not keep.
 */
export class PcapStream {
  private pending: Buffer = Buffer.alloc(0);
  private le: boolean | null = null;
  private nanoseconds = false;

  constructor(private readonly onPacket: (p: TcpPacket) => void) {}

  push(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let off = 0;
    const b = this.pending;
    if (this.le === null) {
      if (b.length < 24) return;
      const magic = b.readUInt32LE(0);
      this.le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
      const be = b.readUInt32BE(0);
      this.nanoseconds = magic === 0xa1b23c4d || be === 0xa1b23c4d;
      off = 24;
    }
    const u32 = (o: number) => (this.le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    while (off + 16 <= b.length) {
      const incl = u32(off + 8);
      if (off + 16 + incl > b.length) break;
      const at = u32(off) * 1000 + u32(off + 4) / (this.nanoseconds ? 1e6 : 1e3);
      const p = parseFrame(b.subarray(off + 16, off + 16 + incl), at);
      off += 16 + incl;
      if (p) this.onPacket(p);
    }
    this.pending = off === b.length ? Buffer.alloc(0) : Buffer.from(b.subarray(off));
  }
}

/** Every IPv4 TCP packet of a whole pcap file. */
export function tcpPackets(file: Buffer): TcpPacket[] {
  const out: TcpPacket[] = [];
  new PcapStream((p) => out.push(p)).push(file);
  return out;
}
