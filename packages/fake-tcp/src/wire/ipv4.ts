/** IPv4 header: parse (options tolerated) and build (fixed 20-byte form, never options). */
import { read16, read32, write16, write32 } from "./bytes.js";
import { finishChecksum, PROTO_TCP, sumWords } from "./checksum.js";
import { ParseError, type ParseErrorCode } from "./errors.js";

/** Length of the IPv4 headers we build. */
export const IPV4_HEADER_LENGTH = 20;
/** TTL of the packets we build. */
export const IPV4_TTL = 64;

/** Byte offsets, within the IPv4 header, of the fields written in place after it is built. */
export const Ipv4Field = { totalLength: 2, checksum: 10 } as const;

/**
 * Rewrites, in our IPv4 header at `offset` (ID 0), the total length and the header checksum
 * that covers it. `baseSum` is `ipv4HeaderBaseSum(src, dst)`.
 */
export function setIpv4TotalLength(
  buf: Uint8Array,
  offset: number,
  totalLength: number,
  baseSum: number,
): void {
  write16(buf, offset + Ipv4Field.totalLength, totalLength);
  write16(buf, offset + Ipv4Field.checksum, finishChecksum(baseSum + totalLength));
}

/** A parsed IPv4 header. Reuse one instance per parser to avoid allocation. */
export interface Ipv4Repr {
  /** Source address, unsigned 32-bit. */
  src: number;
  /** Destination address, unsigned 32-bit. */
  dst: number;
  protocol: number;
  ttl: number;
  tos: number;
  identification: number;
  dontFragment: boolean;
  /** Header length in bytes, options included. */
  headerLength: number;
  /** Header checksum as found (not verified: see `ipv4HeaderChecksumValid`). */
  checksum: number;
  /** Absolute offset of the payload in the buffer. */
  payloadOffset: number;
  /** Payload length from the total-length field (link padding excluded). */
  payloadLength: number;
}

/** A fresh, zeroed repr to reuse as a parse target. */
export function newIpv4Repr(): Ipv4Repr {
  return {
    src: 0,
    dst: 0,
    protocol: 0,
    ttl: 0,
    tos: 0,
    identification: 0,
    dontFragment: false,
    headerLength: 0,
    checksum: 0,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

/**
 * Parses the IPv4 header of `buf[offset, offset + length)` into `out`. Options are skipped;
 * fragments are rejected (we never reassemble). Returns `ParseError.ok` or the reason.
 */
export function parseIpv4Header(
  buf: Uint8Array,
  offset: number,
  length: number,
  out: Ipv4Repr,
): ParseErrorCode {
  if (length < IPV4_HEADER_LENGTH) return ParseError.truncated;
  const b0 = buf[offset];
  if (b0 >>> 4 !== 4) return ParseError.badVersion;
  const headerLength = (b0 & 15) << 2;
  if (headerLength < IPV4_HEADER_LENGTH || headerLength > length) return ParseError.badHeaderLength;
  const totalLength = read16(buf, offset + 2);
  if (totalLength < headerLength) return ParseError.badTotalLength;
  if (totalLength > length) return ParseError.truncated;
  const fragment = read16(buf, offset + 6);
  if ((fragment & 0x3fff) !== 0) return ParseError.fragment;
  out.tos = buf[offset + 1];
  out.identification = read16(buf, offset + 4);
  out.dontFragment = (fragment & 0x4000) !== 0;
  out.ttl = buf[offset + 8];
  out.protocol = buf[offset + 9];
  out.checksum = read16(buf, offset + 10);
  out.src = read32(buf, offset + 12);
  out.dst = read32(buf, offset + 16);
  out.headerLength = headerLength;
  out.payloadOffset = offset + headerLength;
  out.payloadLength = totalLength - headerLength;
  return ParseError.ok;
}

/** True when the header checksum (options included) of the IPv4 header at `offset` is valid. */
export function ipv4HeaderChecksumValid(buf: Uint8Array, offset: number): boolean {
  const headerLength = (buf[offset] & 15) << 2;
  return finishChecksum(sumWords(buf, offset, headerLength)) === 0;
}

/**
 * Unfolded sum of our fixed IPv4 header words except the total length and checksum: version/IHL,
 * TOS 0, ID 0, DF, TTL (64 by default), protocol TCP and both addresses. Per-connection constant.
 */
export function ipv4HeaderBaseSum(src: number, dst: number, ttl = IPV4_TTL): number {
  return (
    0x4500 +
    0x4000 +
    (((ttl & 0xff) << 8) | PROTO_TCP) +
    (src >>> 16) +
    (src & 0xffff) +
    (dst >>> 16) +
    (dst & 0xffff)
  );
}

/**
 * Writes our 20-byte IPv4 header (TOS 0, ID `id` (default 0), DF, TTL `ttl` (default 64),
 * protocol TCP, checksum filled in) at `offset`. `baseSum` is `ipv4HeaderBaseSum(src, dst, ttl)`,
 * precomputed by the caller.
 */
export function emitIpv4Header(
  buf: Uint8Array,
  offset: number,
  src: number,
  dst: number,
  payloadLength: number,
  baseSum: number = ipv4HeaderBaseSum(src, dst),
  id = 0,
  ttl = IPV4_TTL,
): number {
  const totalLength = IPV4_HEADER_LENGTH + payloadLength;
  buf[offset] = 0x45;
  buf[offset + 1] = 0;
  write16(buf, offset + 2, totalLength);
  write16(buf, offset + 4, id);
  buf[offset + 6] = 0x40;
  buf[offset + 7] = 0;
  buf[offset + 8] = ttl;
  buf[offset + 9] = PROTO_TCP;
  write16(buf, offset + 10, finishChecksum(baseSum + (id & 0xffff) + totalLength));
  write32(buf, offset + 12, src);
  write32(buf, offset + 16, dst);
  return IPV4_HEADER_LENGTH;
}
