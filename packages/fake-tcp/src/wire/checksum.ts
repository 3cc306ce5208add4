/**
 * The Internet checksum (RFC 1071) and the TCP pseudo-header sums.
 *
 * Sums are kept unfolded as plain JS numbers (sums of 16-bit words fit exactly in a double for
 * any packet size we handle) and folded once at the end, which is cheaper than folding per word.
 */

/**
 * Adds the bytes `buf[offset, offset + length)` as big-endian 16-bit words to `initial` and
 * returns the unfolded sum. An odd trailing byte is padded with zero, as RFC 1071 requires.
 */
export function sumWords(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  if (length >= 64) {
    const address = buf.byteOffset + offset;
    // Four bytes per load when the data is 2-byte aligned: see sumAligned.
    if ((address & 3) === 0) return sumAligned(buf, offset, length, initial);
    if ((address & 3) === 2)
      return sumAligned(
        buf,
        offset + 2,
        length - 2,
        initial + (buf[offset] << 8) + buf[offset + 1],
      );
    // Odd address: the rest, summed on its own word grid, is byte-swapped relative to ours.
    const rest = foldSum(sumWords(buf, offset + 1, length - 1, 0));
    return initial + (buf[offset] << 8) + (((rest & 0xff) << 8) | (rest >>> 8));
  }
  return sumBytes(buf, offset, length, initial);
}

/**
 * Sum of a 4-byte-aligned run read as little-endian 32-bit words. One's-complement sums are
 * byte-order independent (RFC 1071 section 2B): the folded little-endian sum is the big-endian
 * sum with its two bytes swapped, so we swap once at the end.
 */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function sumAligned(buf: Uint8Array, offset: number, length: number, initial: number): number {
  const n = length >>> 2;
  const words = new Uint32Array(buf.buffer, buf.byteOffset + offset, n);
  let a = 0;
  let b = 0;
  let i = 0;
  const n4 = n - 3;
  while (i < n4) {
    a += words[i] + words[i + 1];
    b += words[i + 2] + words[i + 3];
    i += 4;
  }
  while (i < n) a += words[i++];
  const folded = foldSum(a + b);
  const swapped = LITTLE_ENDIAN ? ((folded & 0xff) << 8) | (folded >>> 8) : folded;
  const done = n << 2;
  return sumBytes(buf, offset + done, length - done, initial + swapped);
}

function sumBytes(buf: Uint8Array, offset: number, length: number, initial: number): number {
  let sum = initial;
  let i = offset;
  const end = offset + length;
  // Eight 16-bit words per iteration; the two halves are added separately so that the adds are
  // independent (better instruction-level parallelism) and both stay in small-integer range.
  const end16 = end - 15;
  let odd = 0;
  while (i < end16) {
    sum +=
      (buf[i] << 8) +
      buf[i + 1] +
      (buf[i + 2] << 8) +
      buf[i + 3] +
      (buf[i + 4] << 8) +
      buf[i + 5] +
      (buf[i + 6] << 8) +
      buf[i + 7];
    odd +=
      (buf[i + 8] << 8) +
      buf[i + 9] +
      (buf[i + 10] << 8) +
      buf[i + 11] +
      (buf[i + 12] << 8) +
      buf[i + 13] +
      (buf[i + 14] << 8) +
      buf[i + 15];
    i += 16;
  }
  sum += odd;
  const end2 = end - 1;
  while (i < end2) {
    sum += (buf[i] << 8) + buf[i + 1];
    i += 2;
  }
  if (i < end) sum += buf[i] << 8;
  return sum;
}

/** Folds an unfolded sum to 16 bits with end-around carry (not complemented). */
export function foldSum(sum: number): number {
  // A sum above 2^32 cannot use 32-bit operators, so reduce it arithmetically first.
  if (sum > 0xffffffff) sum = (sum % 0x100000000) + Math.floor(sum / 0x100000000);
  sum = (sum >>> 16) + (sum & 0xffff);
  sum = (sum >>> 16) + (sum & 0xffff);
  return (sum >>> 16) + (sum & 0xffff);
}

/** The final checksum field value for an unfolded sum: the folded sum, complemented. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/** Internet checksum of `buf[offset, offset + length)`: the value to store in a checksum field. */
export function internetChecksum(
  buf: Uint8Array,
  offset = 0,
  length = buf.length - offset,
): number {
  return finishChecksum(sumWords(buf, offset, length));
}

/** IP protocol number of TCP, part of the pseudo-header. */
export const PROTO_TCP = 6;

/**
 * Unfolded sum of the IPv4 pseudo-header without the TCP length: source and destination
 * (as unsigned 32-bit numbers) and the protocol. Add the TCP length to complete it.
 */
export function ipv4PseudoBase(src: number, dst: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + PROTO_TCP;
}

/**
 * Unfolded sum of the IPv6 pseudo-header without the upper-layer length: the two addresses as
 * four 32-bit words each, and the next-header value. Add the TCP length to complete it.
 */
export function ipv6PseudoBase(src: ArrayLike<number>, dst: ArrayLike<number>): number {
  let sum = PROTO_TCP;
  for (let i = 0; i < 4; i++) {
    const s = src[i] >>> 0;
    const d = dst[i] >>> 0;
    sum += (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff);
  }
  return sum;
}

/**
 * The value a sender puts in the TCP checksum field when the device completes the checksum
 * (checksum offload): the folded pseudo-header sum, not complemented. The device then adds the
 * TCP header and payload and complements the result.
 */
export function pseudoHeaderSeed(pseudoBase: number, tcpLength: number): number {
  return foldSum(pseudoBase + tcpLength);
}
