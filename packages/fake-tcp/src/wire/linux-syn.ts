/**
 * The handshake segments of keyed mode, shaped as a current Linux kernel builds them (checked
 * against captures of kernel 6.x handshakes; see docs/wire-protocol.md):
 *
 * - SYN: window = the largest multiple of the MSS that fits 16 bits, options MSS,
 *   SACK-permitted, timestamps (TSecr 0), NOP, window scale: 20 bytes, header 40 bytes.
 * - SYN-ACK of a server that declines timestamps (Linux with net.ipv4.tcp_timestamps=0):
 *   the same window, options MSS, NOP, NOP, SACK-permitted, NOP, window scale: 12 bytes,
 *   header 32 bytes. Declining timestamps keeps every later segment free of options.
 */
import { write16, write32 } from "./bytes.js";

/** Options of the keyed SYN (Linux's order and padding). */
export const LINUX_SYN_OPTIONS_LENGTH = 20;
/** Options of the keyed SYN-ACK (timestamps declined). */
export const LINUX_SYN_ACK_OPTIONS_LENGTH = 12;
/** Largest window-scale shift TCP allows (RFC 7323). */
export const MAX_WINDOW_SCALE = 14;

/** The MSS a host announces for an interface MTU (IPv4: MTU - 40, IPv6: MTU - 60). */
export function linuxMss(family: 4 | 6, mtu: number): number {
  return Math.max(0, Math.min(0xffff, mtu - (family === 4 ? 40 : 60)));
}

/** The window of Linux's SYN and SYN-ACK: the largest multiple of `mss` below 2^16 (1460: 64240). */
export function linuxSynWindow(mss: number): number {
  return mss <= 0 || mss > 0xffff ? 0xffff : Math.floor(0xffff / mss) * mss;
}

/**
 * The window-scale shift Linux announces for a receive buffer limit of `bytes` (the larger of
 * net.ipv4.tcp_rmem's maximum and net.core.rmem_max): log2 of the buffer, less 15, within
 * 0..14. The kernel's default 6 MiB gives 7; 32 MiB gives 10.
 */
export function linuxWindowScale(bytes: number): number {
  if (!(bytes > 0xffff)) return 0;
  const shift = Math.floor(Math.log2(Math.min(bytes, 2 ** 31))) - 15;
  return Math.max(0, Math.min(MAX_WINDOW_SCALE, shift));
}

/** Writes the SYN's options at `at`: MSS, SACK-permitted, timestamps (`tsval`, TSecr 0), NOP, WS. */
export function emitLinuxSynOptions(
  buf: Uint8Array,
  at: number,
  mss: number,
  tsval: number,
  windowScale: number,
): number {
  buf[at] = 2;
  buf[at + 1] = 4;
  write16(buf, at + 2, mss);
  buf[at + 4] = 4;
  buf[at + 5] = 2;
  buf[at + 6] = 8;
  buf[at + 7] = 10;
  write32(buf, at + 8, tsval);
  write32(buf, at + 12, 0);
  buf[at + 16] = 1;
  buf[at + 17] = 3;
  buf[at + 18] = 3;
  buf[at + 19] = windowScale;
  return LINUX_SYN_OPTIONS_LENGTH;
}

/**
 * Writes the SYN-ACK's options at `at`: MSS, NOP, NOP, SACK-permitted, NOP, WS. Spelled out
 * byte by byte like the SYN's: the two layouts differ, and each reads as the bytes on the wire.
 */
export function emitLinuxSynAckOptions(
  buf: Uint8Array,
  at: number,
  mss: number,
  windowScale: number,
): number {
  buf[at] = 2;
  buf[at + 1] = 4;
  write16(buf, at + 2, mss);
  buf[at + 4] = 1;
  buf[at + 5] = 1;
  buf[at + 6] = 4;
  buf[at + 7] = 2;
  buf[at + 8] = 1;
  buf[at + 9] = 3;
  buf[at + 10] = 3;
  buf[at + 11] = windowScale;
  return LINUX_SYN_ACK_OPTIONS_LENGTH;
}
