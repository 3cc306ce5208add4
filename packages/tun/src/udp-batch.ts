/**
 * Views over one received batch of datagrams and their source address records. The memory
 * belongs to the addon and is rewritten by the next batch.
 */
import { addon } from "./native.js";

/**
 * Bytes per address record. Layout (little-endian):
 * - `[0, 16)` address bytes (IPv4 in `[0, 4)`, the rest zero; IPv4-mapped IPv6 peers of a
 *   dual-stack socket are reported as IPv4)
 * - `[16, 18)` port (u16), `[18]` family (4 or 6), `[19]` zero
 * - `[20, 24)` hash (u32, FNV-1a over family, address and port)
 * - `[24, 32)` key (f64): exact for IPv4 (`address * 65536 + port`, below 2^48); for IPv6
 *   `2^52 + hash(address) * 65536 + port` (different peers may share one: compare bytes)
 *
 * `send()`/`sendBatch()` accept records in the same layout as destinations.
 */
export const ADDRESS_RECORD_BYTES = 32;

/** Encodes `address`:`port` as an address record (e.g. a peer table entry to send to). */
export function encodeUdpAddress(address: string, port: number): Uint8Array {
  return addon.encodeUdpAddress(address, port);
}

/** Formats the address bytes of record `index` in `records` as text (allocates). */
export function formatAddressRecord(records: Uint8Array, index = 0): string {
  const base = index * ADDRESS_RECORD_BYTES;
  if (records[base + 18] === 4) return records.subarray(base, base + 4).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2)
    groups.push(((records[base + i] << 8) | records[base + i + 1]).toString(16));
  // Shortest form: collapse the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/**
 * One batch of received datagrams: datagram `i` occupies
 * `buffer[offsets[2 * i], offsets[2 * i] + offsets[2 * i + 1])`, and its source is address
 * record `i` of `addresses` (see {@link ADDRESS_RECORD_BYTES}). The accessors read the record
 * without allocating (except {@link address} and {@link copyAddress}).
 *
 * Valid only until the handler returns: the next batch overwrites everything.
 */
export class UdpBatch {
  /** The shared receive buffer. */
  readonly buffer: Buffer;
  /** Start/len pairs of the datagrams. */
  readonly offsets: Uint32Array;
  /** The shared source address records (one per datagram). */
  readonly addresses: Uint8Array;
  /**
   * The shared destination address records (one per datagram: the address the datagram was
   * sent to, with this socket's port), filled only on sockets bound with `packetInfo: true`
   * (all zero otherwise). Pass `destinations, i` as the source of a reply to answer from the
   * address the peer used.
   */
  readonly destinations: Uint8Array;
  /** Datagrams in this batch. */
  count = 0;
  /** {@link buffer} as a plain Uint8Array, for {@link datagram}. */
  readonly #bytes: Uint8Array;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #f64: Float64Array;
  readonly #dstF64: Float64Array;

  /** @internal Made by UdpBatchSocket over the addon's buffers. */
  constructor(
    buffer: ArrayBuffer,
    offsets: ArrayBuffer,
    addresses: ArrayBuffer,
    destinations: ArrayBuffer,
  ) {
    this.buffer = Buffer.from(buffer);
    this.#bytes = new Uint8Array(buffer);
    this.offsets = new Uint32Array(offsets);
    this.addresses = new Uint8Array(addresses);
    this.#u16 = new Uint16Array(addresses);
    this.#u32 = new Uint32Array(addresses);
    this.#f64 = new Float64Array(addresses);
    this.destinations = new Uint8Array(destinations);
    this.#dstF64 = new Float64Array(destinations);
  }

  /**
   * Datagram `i` as a view of the receive buffer (no copy; valid while the handler runs). A
   * plain Uint8Array: a Buffer's `subarray` goes through its species constructor and costs
   * several times as much, once per datagram.
   */
  datagram(i: number): Uint8Array {
    const start = this.offsets[2 * i];
    return this.#bytes.subarray(start, start + this.offsets[2 * i + 1]);
  }

  /** Byte offset of datagram `i` in {@link buffer}. */
  start(i: number): number {
    return this.offsets[2 * i];
  }

  /** Length of datagram `i`. */
  length(i: number): number {
    return this.offsets[2 * i + 1];
  }

  /** Source port of datagram `i`. */
  port(i: number): number {
    return this.#u16[i * 16 + 8];
  }

  /** Source address family of datagram `i` (4 or 6). */
  family(i: number): 4 | 6 {
    return this.addresses[i * ADDRESS_RECORD_BYTES + 18] as 4 | 6;
  }

  /** 32-bit hash of the source (family, address, port) of datagram `i`. */
  hash(i: number): number {
    return this.#u32[i * 8 + 5];
  }

  /**
   * Numeric key of the source of datagram `i`: exact (unique per address and port) for IPv4,
   * a hash of the address plus the exact port for IPv6 (see {@link ADDRESS_RECORD_BYTES}).
   */
  key(i: number): number {
    return this.#f64[i * 4 + 3];
  }

  /** True when the source of datagram `i` equals the record `record[index]` (same bytes). */
  sameSource(i: number, record: Uint8Array, index = 0): boolean {
    const a = i * ADDRESS_RECORD_BYTES;
    const b = index * ADDRESS_RECORD_BYTES;
    for (let k = 0; k < 20; k++) if (this.addresses[a + k] !== record[b + k]) return false;
    return true;
  }

  /**
   * Numeric key of the destination (local address and port) of datagram `i`, same scheme as
   * {@link key}; 0 without `packetInfo`.
   */
  destinationKey(i: number): number {
    return this.#dstF64[i * 4 + 3];
  }

  /** Destination address of datagram `i` as text (allocates); "" without `packetInfo`. */
  destinationAddress(i: number): string {
    return this.destinations[i * ADDRESS_RECORD_BYTES + 18] === 0
      ? ""
      : formatAddressRecord(this.destinations, i);
  }

  /** Source address of datagram `i` as text (allocates: for logs and slow paths). */
  address(i: number): string {
    return formatAddressRecord(this.addresses, i);
  }

  /** A copy of the address record of datagram `i` (e.g. to keep in a peer table and send to). */
  copyAddress(i: number): Uint8Array {
    const a = i * ADDRESS_RECORD_BYTES;
    return this.addresses.slice(a, a + ADDRESS_RECORD_BYTES);
  }
}
