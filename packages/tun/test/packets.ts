/**
 * A tiny IP packet builder and parser for the TUN tests: IPv4/IPv6 with UDP, ICMP echo and
 * TCP SYN, with real checksums. Deliberately independent of the fake-tcp stack.
 */
import { isIPv4 } from "node:net";

/** Address bytes of an IPv4 or IPv6 literal. */
export function addressBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split(".").map(Number));
  const [head, tail = ""] = address.split("::");
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const h = groups(head);
  const t = address.includes("::") ? groups(tail) : [];
  const all = [...h, ...new Array(8 - h.length - t.length).fill("0"), ...t];
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(Number.parseInt(all[i], 16), 2 * i);
  return out;
}

/** Ones'-complement sum of `data` added to `acc` (not folded, not inverted). */
export function sum16(data: Uint8Array, acc = 0): number {
  let sum = acc;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.length % 2 === 1) sum += data[data.length - 1] << 8;
  return sum;
}

/** Folds a 32-bit ones'-complement sum to 16 bits. */
export function fold(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The Internet checksum of `data` starting from `acc`. */
export function checksum(data: Uint8Array, acc = 0): number {
  return ~fold(sum16(data, acc)) & 0xffff;
}

/** Pseudo-header sum for a transport segment of `length` bytes. */
export function pseudoHeaderSum(src: string, dst: string, proto: number, length: number): number {
  return sum16(addressBytes(src), sum16(addressBytes(dst))) + proto + length;
}

/** Wraps a transport segment in an IPv4 or IPv6 header. */
export function ipPacket(src: string, dst: string, proto: number, segment: Buffer): Buffer {
  if (isIPv4(src)) {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h.writeUInt16BE(20 + segment.length, 2);
    h.writeUInt16BE(0x4000, 6); // don't fragment
    h[8] = 64;
    h[9] = proto;
    addressBytes(src).copy(h, 12);
    addressBytes(dst).copy(h, 16);
    h.writeUInt16BE(checksum(h), 10);
    return Buffer.concat([h, segment]);
  }
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(segment.length, 4);
  h[6] = proto;
  h[7] = 64;
  addressBytes(src).copy(h, 8);
  addressBytes(dst).copy(h, 24);
  return Buffer.concat([h, segment]);
}

/** A UDP datagram in IP with a complete checksum. */
export function udpPacket(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  payload: Buffer,
): Buffer {
  const u = Buffer.alloc(8 + payload.length);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(u.length, 4);
  payload.copy(u, 8);
  const c = checksum(u, pseudoHeaderSum(src, dst, 17, u.length));
  u.writeUInt16BE(c === 0 ? 0xffff : c, 6);
  return ipPacket(src, dst, 17, u);
}

/** An ICMP (IPv4) or ICMPv6 echo request. */
export function echoRequest(
  src: string,
  dst: string,
  id: number,
  seq: number,
  data: Buffer,
): Buffer {
  const v4 = isIPv4(src);
  const m = Buffer.alloc(8 + data.length);
  m[0] = v4 ? 8 : 128;
  m.writeUInt16BE(id, 4);
  m.writeUInt16BE(seq, 6);
  data.copy(m, 8);
  const c = v4 ? checksum(m) : checksum(m, pseudoHeaderSum(src, dst, 58, m.length));
  m.writeUInt16BE(c, 2);
  return ipPacket(src, dst, v4 ? 1 : 58, m);
}

/**
 * A TCP SYN. With `seedOnly` the checksum field holds just the folded pseudo-header sum
 * (what a device with checksum offload expects); otherwise the complete checksum.
 */
export function tcpSyn(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  seq: number,
  seedOnly: boolean,
): Buffer {
  const t = Buffer.alloc(24);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(seq, 4);
  t[12] = 6 << 4; // data offset: 6 words (one option)
  t[13] = 0x02; // SYN
  t.writeUInt16BE(64240, 14);
  t.writeUInt32BE(0x020405b4, 20); // MSS 1460
  const seed = pseudoHeaderSum(src, dst, 6, t.length);
  t.writeUInt16BE(seedOnly ? fold(seed) : checksum(t, seed), 16);
  return ipPacket(src, dst, 6, t);
}

/** What the tests look at in a packet read from the TUN. */
export interface ParsedPacket {
  version: 4 | 6;
  proto: number;
  src: string; // hex of the address bytes
  dst: string;
  /** Transport segment (after the IP header). */
  l4: Buffer;
  sport: number;
  dport: number;
}

/** Parses an IPv4/IPv6 packet (no extension headers); null for anything else. */
export function parsePacket(packet: Buffer): ParsedPacket | null {
  const version = packet[0] >> 4;
  if (version === 4 && packet.length >= 20) {
    const ihl = (packet[0] & 15) * 4;
    const l4 = packet.subarray(ihl, packet.readUInt16BE(2));
    return {
      version: 4,
      proto: packet[9],
      src: packet.toString("hex", 12, 16),
      dst: packet.toString("hex", 16, 20),
      l4,
      sport: l4.length >= 4 ? l4.readUInt16BE(0) : 0,
      dport: l4.length >= 4 ? l4.readUInt16BE(2) : 0,
    };
  }
  if (version === 6 && packet.length >= 40) {
    const l4 = packet.subarray(40, 40 + packet.readUInt16BE(4));
    return {
      version: 6,
      proto: packet[6],
      src: packet.toString("hex", 8, 24),
      dst: packet.toString("hex", 24, 40),
      l4,
      sport: l4.length >= 4 ? l4.readUInt16BE(0) : 0,
      dport: l4.length >= 4 ? l4.readUInt16BE(2) : 0,
    };
  }
  return null;
}

/** Hex of an address, to compare with {@link ParsedPacket.src}/`dst`. */
export function addrHex(address: string): string {
  return addressBytes(address).toString("hex");
}

/**
 * The header of a TCP super-packet for `TunQueue.writeSegmented`: IP header + 20-byte TCP
 * header describing `payloadLength` bytes of payload, IPv4 ID `id`, DF set, the TCP checksum
 * field holding the folded pseudo-header sum of the whole TCP length (not complemented).
 */
export function tcpSuperHeader(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  seq: number,
  flags: number,
  payloadLength: number,
  id = 0,
): Buffer {
  const t = Buffer.alloc(20);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(seq >>> 0, 4);
  t.writeUInt32BE(1, 8);
  t[12] = 5 << 4;
  t[13] = flags;
  t.writeUInt16BE(65535, 14);
  t.writeUInt16BE(fold(pseudoHeaderSum(src, dst, 6, 20 + payloadLength)), 16);
  const ip = ipPacket(src, dst, 6, t); // lengths cover the header only: fixed up below
  if (ip[0] >> 4 === 4) {
    ip.writeUInt16BE(40 + payloadLength, 2);
    ip.writeUInt16BE(id, 4);
    ip.writeUInt16BE(0, 10);
    ip.writeUInt16BE(checksum(ip.subarray(0, 20)), 10);
  } else {
    ip.writeUInt16BE(20 + payloadLength, 4);
  }
  return ip;
}

/** True when the packet's TCP checksum (over its whole IP-length-delimited segment) verifies. */
export function tcpChecksumValid(packet: Buffer): boolean {
  const p = parsePacket(packet);
  if (p === null || p.proto !== 6) return false;
  const [src, dst] =
    p.version === 4
      ? [packet.subarray(12, 16), packet.subarray(16, 20)]
      : [packet.subarray(8, 24), packet.subarray(24, 40)];
  return fold(sum16(p.l4, sum16(src, sum16(dst)) + 6 + p.l4.length)) === 0xffff;
}

/** True when the IPv4 header checksum verifies (always true for IPv6, which has none). */
export function ipv4HeaderValid(packet: Buffer): boolean {
  if (packet[0] >> 4 !== 4) return true;
  return fold(sum16(packet.subarray(0, (packet[0] & 15) * 4))) === 0xffff;
}
