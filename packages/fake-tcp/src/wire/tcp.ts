/** TCP header and options: parse everything common, build only what the wire contract allows. */
import { read16, read32, write16, write32 } from "./bytes.js";
import { ParseError, type ParseErrorCode } from "./errors.js";
import { OURS_OPTION, TCP_SYN_OURS_HEADER_LENGTH } from "./ours-option.js";

export const TCP_HEADER_LENGTH = 20;
/** Header length of our SYN and SYN-ACK: 20 bytes plus NOP and window scale (6 words). */
export const TCP_SYN_HEADER_LENGTH = 24;
/** Window field of every segment we build. */
export const TCP_WINDOW = 0xffff;
/** Window-scale shift we announce on SYN and SYN-ACK, as phantun does. */
export const TCP_WINDOW_SCALE = 14;

/** TCP flag bits (byte 13 of the header). */
export const TcpFlags = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

/** Byte offsets, within the TCP header, of the fields written in place after it is built. */
export const TcpField = { seq: 4, ack: 8, dataOffset: 12, window: 14, checksum: 16 } as const;

/** Writes the sequence and acknowledgment numbers of the TCP header at `tcp`. */
export function setTcpSeqAck(buf: Uint8Array, tcp: number, seq: number, ack: number): void {
  write32(buf, tcp + TcpField.seq, seq);
  write32(buf, tcp + TcpField.ack, ack);
}

/** Writes the checksum of the TCP header at `tcp` (a complete one, or the pseudo-header seed). */
export function setTcpChecksum(buf: Uint8Array, tcp: number, checksum: number): void {
  write16(buf, tcp + TcpField.checksum, checksum);
}

/** Writes the header length (data offset) of the TCP header at `tcp`, a multiple of 4 bytes. */
export function setTcpHeaderLength(buf: Uint8Array, tcp: number, length: number): void {
  buf[tcp + TcpField.dataOffset] = (length / 4) << 4;
}

/** Writes the window of the TCP header at `tcp`. */
export function setTcpWindow(buf: Uint8Array, tcp: number, window: number): void {
  write16(buf, tcp + TcpField.window, window);
}

/** A parsed TCP header (the stack scans the options only for its own, see ours-option.ts). */
export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  /** Sequence number, unsigned 32-bit. */
  seq: number;
  /** Acknowledgment number, unsigned 32-bit. */
  ack: number;
  /** The eight flag bits. */
  flags: number;
  window: number;
  checksum: number;
  urgent: number;
  /** Header length in bytes, options included. */
  headerLength: number;
  /** Absolute offset of the options (= header offset + 20) and their length. */
  optionsOffset: number;
  optionsLength: number;
  payloadOffset: number;
  payloadLength: number;
}

export function newTcpRepr(): TcpRepr {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    checksum: 0,
    urgent: 0,
    headerLength: 0,
    optionsOffset: 0,
    optionsLength: 0,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

/**
 * Parses the TCP segment `buf[offset, offset + length)` (length = IP payload length) into
 * `out`. The checksum is not verified: under checksum offload the kernel may hand us segments
 * whose checksum field holds only the pseudo-header seed.
 */
export function parseTcpHeader(
  buf: Uint8Array,
  offset: number,
  length: number,
  out: TcpRepr,
): ParseErrorCode {
  if (length < TCP_HEADER_LENGTH) return ParseError.truncated;
  const headerLength = (buf[offset + 12] >>> 4) << 2;
  if (headerLength < TCP_HEADER_LENGTH || headerLength > length) return ParseError.badHeaderLength;
  out.srcPort = read16(buf, offset);
  out.dstPort = read16(buf, offset + 2);
  out.seq = read32(buf, offset + 4);
  out.ack = read32(buf, offset + 8);
  out.flags = buf[offset + 13];
  out.window = read16(buf, offset + 14);
  out.checksum = read16(buf, offset + 16);
  out.urgent = read16(buf, offset + 18);
  out.headerLength = headerLength;
  out.optionsOffset = offset + TCP_HEADER_LENGTH;
  out.optionsLength = headerLength - TCP_HEADER_LENGTH;
  out.payloadOffset = offset + headerLength;
  out.payloadLength = length - headerLength;
  return ParseError.ok;
}

/** TCP options we understand. Absent fields were absent on the wire. */
export interface TcpOptions {
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  /** SACK blocks as [left edge, right edge] pairs (1 to 4). */
  sack?: Array<[number, number]>;
  timestamp?: { value: number; echo: number };
  /** Kinds of options we skipped (unknown but well-formed). */
  unknown?: number[];
}

/** TCP option kinds (RFC 793, 7323, 2018). */
export const OPT_EOL = 0;
export const OPT_NOP = 1;
export const OPT_MSS = 2;
export const OPT_WS = 3;
export const OPT_SACK_PERMITTED = 4;
export const OPT_SACK = 5;
export const OPT_TIMESTAMP = 8;

/**
 * Encodes options (for tests and tools; the stack itself only ever sends NOP + WS 14 and
 * our negotiation option), padded with EOL bytes to a multiple of 4 as TCP requires.
 */
export function encodeTcpOptions(opts: TcpOptions): Uint8Array {
  const bytes: number[] = [];
  if (opts.mss !== undefined) bytes.push(OPT_MSS, 4, opts.mss >>> 8, opts.mss & 255);
  if (opts.windowScale !== undefined) bytes.push(OPT_NOP, OPT_WS, 3, opts.windowScale & 255);
  if (opts.sackPermitted) bytes.push(OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2);
  if (opts.timestamp) {
    const t = new Uint8Array(10);
    t[0] = OPT_TIMESTAMP;
    t[1] = 10;
    write32(t, 2, opts.timestamp.value);
    write32(t, 6, opts.timestamp.echo);
    bytes.push(OPT_NOP, OPT_NOP, ...t);
  }
  if (opts.sack && opts.sack.length > 0) {
    const s = new Uint8Array(2 + 8 * opts.sack.length);
    s[0] = OPT_SACK;
    s[1] = s.length;
    opts.sack.forEach(([l, r], b) => {
      write32(s, 2 + 8 * b, l);
      write32(s, 6 + 8 * b, r);
    });
    bytes.push(OPT_NOP, OPT_NOP, ...s);
  }
  while (bytes.length % 4 !== 0) bytes.push(OPT_EOL);
  return Uint8Array.from(bytes);
}

/**
 * Writes a TCP header at `offset` with window 0xFFFF, urgent pointer 0 and checksum 0 (the
 * caller fills it). With `synOptions`, appends NOP + window-scale 14 (data offset 6 words),
 * and with `ours` as well our negotiation option after them (data offset 7 words, see
 * `ours-option.ts`); otherwise no options. Returns the header length.
 */
export function emitTcpHeader(
  buf: Uint8Array,
  offset: number,
  srcPort: number,
  dstPort: number,
  seq: number,
  ack: number,
  flags: number,
  synOptions: boolean,
  ours = false,
): number {
  write16(buf, offset, srcPort);
  write16(buf, offset + 2, dstPort);
  write32(buf, offset + 4, seq);
  write32(buf, offset + 8, ack);
  buf[offset + 12] = synOptions ? (ours ? 0x70 : 0x60) : 0x50;
  buf[offset + 13] = flags;
  buf[offset + 14] = 0xff;
  buf[offset + 15] = 0xff;
  buf[offset + 16] = 0;
  buf[offset + 17] = 0;
  buf[offset + 18] = 0;
  buf[offset + 19] = 0;
  if (!synOptions) return TCP_HEADER_LENGTH;
  buf[offset + 20] = OPT_NOP;
  buf[offset + 21] = OPT_WS;
  buf[offset + 22] = 3;
  buf[offset + 23] = TCP_WINDOW_SCALE;
  if (!ours) return TCP_SYN_HEADER_LENGTH;
  for (let i = 0; i < 4; i++) buf[offset + 24 + i] = OURS_OPTION[i];
  return TCP_SYN_OURS_HEADER_LENGTH;
}
