/** IPv6 header: fixed 40 bytes; any extension header is refused, never walked. */
import { read16, read32, write16, write32 } from "./bytes.js";
import { PROTO_TCP } from "./checksum.js";
import { ParseError, type ParseErrorCode } from "./errors.js";

export const IPV6_HEADER_LENGTH = 40;
/** Hop limit of the packets we build. */
export const IPV6_HOP_LIMIT = 64;

/** Byte offsets, within the IPv6 header, of the fields written in place after it is built. */
export const Ipv6Field = { payloadLength: 4 } as const;

/** Rewrites the payload length (the TCP header and data) of the IPv6 header at `offset`. */
export function setIpv6PayloadLength(buf: Uint8Array, offset: number, length: number): void {
  write16(buf, offset + Ipv6Field.payloadLength, length);
}

/** Next-header values that are IPv6 extension headers (RFC 8200 section 4 and IANA). */
const EXTENSION_HEADERS = new Set([0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254]);

/** A parsed IPv6 header. Reuse one instance per parser: `src` and `dst` are filled in place. */
export interface Ipv6Repr {
  /** Source address as four unsigned 32-bit words. */
  src: number[];
  dst: number[];
  nextHeader: number;
  hopLimit: number;
  trafficClass: number;
  flowLabel: number;
  payloadOffset: number;
  payloadLength: number;
}

export function newIpv6Repr(): Ipv6Repr {
  return {
    src: [0, 0, 0, 0],
    dst: [0, 0, 0, 0],
    nextHeader: 0,
    hopLimit: 0,
    trafficClass: 0,
    flowLabel: 0,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

/**
 * Parses the fixed IPv6 header of `buf[offset, offset + length)` into `out`. A packet whose
 * next header is an extension header is refused with `ipv6ExtensionHeader`, another
 * non-TCP protocol with `notTcp`.
 */
export function parseIpv6Header(
  buf: Uint8Array,
  offset: number,
  length: number,
  out: Ipv6Repr,
): ParseErrorCode {
  if (length < IPV6_HEADER_LENGTH) return ParseError.truncated;
  const b0 = buf[offset];
  if (b0 >>> 4 !== 6) return ParseError.badVersion;
  const payloadLength = read16(buf, offset + 4);
  if (IPV6_HEADER_LENGTH + payloadLength > length) return ParseError.truncated;
  const nextHeader = buf[offset + 6];
  if (nextHeader !== PROTO_TCP)
    return EXTENSION_HEADERS.has(nextHeader) ? ParseError.ipv6ExtensionHeader : ParseError.notTcp;
  out.trafficClass = ((b0 & 15) << 4) | (buf[offset + 1] >>> 4);
  out.flowLabel = ((buf[offset + 1] & 15) << 16) | read16(buf, offset + 2);
  out.nextHeader = nextHeader;
  out.hopLimit = buf[offset + 7];
  for (let i = 0; i < 4; i++) {
    out.src[i] = read32(buf, offset + 8 + 4 * i);
    out.dst[i] = read32(buf, offset + 24 + 4 * i);
  }
  out.payloadOffset = offset + IPV6_HEADER_LENGTH;
  out.payloadLength = payloadLength;
  return ParseError.ok;
}

/**
 * Writes our 40-byte IPv6 header (traffic class 0, flow label `flowLabel` (default 0), next
 * header TCP, hop limit `hopLimit` (default 64)) at `offset`. Addresses are four words each.
 */
export function emitIpv6Header(
  buf: Uint8Array,
  offset: number,
  src: ArrayLike<number>,
  dst: ArrayLike<number>,
  payloadLength: number,
  flowLabel = 0,
  hopLimit = IPV6_HOP_LIMIT,
): number {
  buf[offset] = 0x60;
  buf[offset + 1] = (flowLabel >>> 16) & 15;
  buf[offset + 2] = flowLabel >>> 8;
  buf[offset + 3] = flowLabel;
  buf[offset + 4] = payloadLength >>> 8;
  buf[offset + 5] = payloadLength;
  buf[offset + 6] = PROTO_TCP;
  buf[offset + 7] = hopLimit;
  for (let i = 0; i < 4; i++) {
    write32(buf, offset + 8 + 4 * i, src[i]);
    write32(buf, offset + 24 + 4 * i, dst[i]);
  }
  return IPV6_HEADER_LENGTH;
}
