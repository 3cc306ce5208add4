/**
 * Whole IP+TCP packets: a reusable parser for the receive path and an allocating builder for
 * tests and tools (the stack's own send path lives in `stack/segment-writer.ts`).
 */
import {
  finishChecksum,
  ipv4PseudoBase,
  ipv6PseudoBase,
  PROTO_TCP,
  pseudoHeaderSeed,
  sumWords,
} from "./checksum.js";
import { ParseError, type ParseErrorCode } from "./errors.js";
import { emitIpv4Header, IPV4_HEADER_LENGTH, newIpv4Repr, parseIpv4Header } from "./ipv4.js";
import { emitIpv6Header, IPV6_HEADER_LENGTH, newIpv6Repr, parseIpv6Header } from "./ipv6.js";
import {
  encodeTcpOptions,
  newTcpRepr,
  parseTcpHeader,
  TCP_HEADER_LENGTH,
  type TcpOptions,
} from "./tcp.js";

/** Length of the IP header we build for `family`. */
export function ipHeaderLength(family: 4 | 6): number {
  return family === 4 ? IPV4_HEADER_LENGTH : IPV6_HEADER_LENGTH;
}

/** Length of the headers of a data segment we build (IP + TCP without options). */
export function dataHeaderLength(family: 4 | 6): number {
  return ipHeaderLength(family) + TCP_HEADER_LENGTH;
}

/**
 * Largest TCP payload one header can describe (the 16-bit IP length field): IPv4's total
 * length counts both headers, IPv6's payload length only the TCP header. The in-memory
 * device's default run limit (a device states its own: `DeviceQueue.maxSegmentedPayload`).
 */
export function maxSegmentedPayload(family: 4 | 6): number {
  return family === 4
    ? 0xffff - IPV4_HEADER_LENGTH - TCP_HEADER_LENGTH
    : 0xffff - TCP_HEADER_LENGTH;
}

/**
 * Parses IPv4 or IPv6 packets carrying TCP into reused repr objects: one instance per receive
 * path, refilled by every `parse` call, so parsing allocates nothing.
 */
export class SegmentParser {
  /** IP version of the last successfully parsed packet. */
  family: 4 | 6 = 4;
  readonly ip4 = newIpv4Repr();
  readonly ip6 = newIpv6Repr();
  readonly tcp = newTcpRepr();

  /** Parses `buf[offset, offset + length)`. Returns `ParseError.ok` or why it was refused. */
  parse(buf: Uint8Array, offset: number, length: number): ParseErrorCode {
    if (length < 1) return ParseError.truncated;
    const version = buf[offset] >>> 4;
    let err: ParseErrorCode;
    if (version === 4) {
      err = parseIpv4Header(buf, offset, length, this.ip4);
      if (err !== ParseError.ok) return err;
      if (this.ip4.protocol !== PROTO_TCP) return ParseError.notTcp;
      this.family = 4;
      return parseTcpHeader(buf, this.ip4.payloadOffset, this.ip4.payloadLength, this.tcp);
    }
    if (version === 6) {
      err = parseIpv6Header(buf, offset, length, this.ip6);
      if (err !== ParseError.ok) return err;
      this.family = 6;
      return parseTcpHeader(buf, this.ip6.payloadOffset, this.ip6.payloadLength, this.tcp);
    }
    return ParseError.badVersion;
  }
}

/** Everything needed to build one packet with `buildPacket`. */
export interface PacketSpec {
  /** IPv4 text/number or IPv6 as four words; both ends must be the same family. */
  src: number | ArrayLike<number>;
  dst: number | ArrayLike<number>;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  /** TCP options to include (default none). */
  options?: TcpOptions;
  /**
   * Option bytes exactly as given, used instead of `options` (for crafting unusual or
   * malformed option areas); padded with EOL to a multiple of 4, at most 40 bytes.
   */
  rawOptions?: Uint8Array;
  payload?: Uint8Array;
  /** Write only the pseudo-header seed into the checksum (as under checksum offload). */
  seedOnly?: boolean;
}

/**
 * Builds a complete IP+TCP packet with valid checksums (allocates; for tests and tools).
 * IPv4 when `src` is a number, IPv6 when it is four words.
 */
export function buildPacket(spec: PacketSpec): Buffer {
  const options = spec.rawOptions
    ? padOptions(spec.rawOptions)
    : spec.options
      ? encodeTcpOptions(spec.options)
      : new Uint8Array(0);
  const payload = spec.payload ?? new Uint8Array(0);
  const tcpHeaderLength = 20 + options.length;
  const tcpLength = tcpHeaderLength + payload.length;
  const v4 = typeof spec.src === "number";
  const ipLength = v4 ? IPV4_HEADER_LENGTH : IPV6_HEADER_LENGTH;
  const out = Buffer.alloc(ipLength + tcpLength);
  let pseudo: number;
  if (v4) {
    emitIpv4Header(out, 0, spec.src as number, spec.dst as number, tcpLength);
    pseudo = ipv4PseudoBase(spec.src as number, spec.dst as number);
  } else {
    const src = spec.src as ArrayLike<number>;
    const dst = spec.dst as ArrayLike<number>;
    emitIpv6Header(out, 0, src, dst, tcpLength);
    pseudo = ipv6PseudoBase(src, dst);
  }
  const t = ipLength;
  out.writeUInt16BE(spec.srcPort, t);
  out.writeUInt16BE(spec.dstPort, t + 2);
  out.writeUInt32BE(spec.seq >>> 0, t + 4);
  out.writeUInt32BE(spec.ack >>> 0, t + 8);
  out[t + 12] = (tcpHeaderLength / 4) << 4;
  out[t + 13] = spec.flags;
  out.writeUInt16BE(0xffff, t + 14);
  out.set(options, t + 20);
  out.set(payload, t + tcpHeaderLength);
  const checksum = spec.seedOnly
    ? pseudoHeaderSeed(pseudo, tcpLength)
    : finishChecksum(sumWords(out, t, tcpLength, pseudo + tcpLength));
  out.writeUInt16BE(checksum, t + 16);
  return out;
}

function padOptions(raw: Uint8Array): Uint8Array {
  if (raw.length > 40) throw new RangeError(`TCP options are at most 40 bytes, got ${raw.length}`);
  const out = new Uint8Array(Math.ceil(raw.length / 4) * 4);
  out.set(raw);
  return out;
}

/** True when the TCP checksum of a complete IPv4/IPv6 packet is valid (for tests). */
export function tcpChecksumValid(packet: Uint8Array): boolean {
  const p = new SegmentParser();
  if (p.parse(packet, 0, packet.length) !== ParseError.ok) return false;
  const start = p.family === 4 ? p.ip4.payloadOffset : p.ip6.payloadOffset;
  const len = p.family === 4 ? p.ip4.payloadLength : p.ip6.payloadLength;
  const pseudo =
    p.family === 4 ? ipv4PseudoBase(p.ip4.src, p.ip4.dst) : ipv6PseudoBase(p.ip6.src, p.ip6.dst);
  return finishChecksum(sumWords(packet, start, len, pseudo + len)) === 0;
}
