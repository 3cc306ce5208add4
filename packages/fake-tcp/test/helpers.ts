import { afterEach, vi } from "vitest";
import { Stack, type StackOptions } from "../src/index.js";
import { createMemoryPair, type MemoryPairOptions } from "../src/testing/index.js";
import {
  buildPacket,
  ipv4HeaderChecksumValid,
  ParseError,
  parseIpv4,
  parseIpv6,
  SegmentParser,
  TcpFlags,
  tcpChecksumValid,
} from "../src/wire/index.js";

export const CLIENT4 = "192.168.200.2";
export const SERVER4 = "192.168.201.2";
export const CLIENT6 = "fcc8::2";
export const SERVER6 = "fcc9::2";

/** Two stacks joined by an in-memory pair: `client` on side A, `server` on side B. */
export function twoStacks(
  opts: {
    pair?: MemoryPairOptions;
    client?: Partial<StackOptions>;
    server?: Partial<StackOptions>;
  } = {},
) {
  const pair = createMemoryPair(opts.pair);
  const client = new Stack({ queues: pair.a, local4: CLIENT4, local6: CLIENT6, ...opts.client });
  const server = new Stack({ queues: pair.b, local4: SERVER4, local6: SERVER6, ...opts.server });
  const close = (): void => {
    client.close();
    server.close();
  };
  return { pair, client, server, close };
}

/** Parses a packet into a plain summary, for assertions. */
export function summarize(packet: Uint8Array) {
  const p = new SegmentParser();
  const err = p.parse(packet, 0, packet.length);
  if (err !== ParseError.ok) throw new Error(`unparseable packet (error ${err})`);
  const t = p.tcp;
  return {
    family: p.family,
    srcPort: t.srcPort,
    dstPort: t.dstPort,
    seq: t.seq,
    ack: t.ack,
    flags: t.flags,
    window: t.window,
    urgent: t.urgent,
    headerLength: t.headerLength,
    payload: Buffer.from(packet.subarray(t.payloadOffset, t.payloadOffset + t.payloadLength)),
    length: packet.length,
    options: Buffer.from(packet.subarray(t.optionsOffset, t.optionsOffset + t.optionsLength)),
  };
}

/** The peer address used by raw-peer tests. */
export const PEER4 = "192.168.200.2";

/**
 * A stack on side A and a hand-driven peer on side B: the test writes crafted packets and
 * reads every packet the stack sends (checked for valid checksums and our fixed header fields).
 */
export function rawPeer(
  opts: { stack?: Partial<StackOptions>; pair?: MemoryPairOptions; family?: 4 | 6 } = {},
) {
  const pair = createMemoryPair(opts.pair);
  const stack = new Stack({ queues: pair.a, local4: SERVER4, local6: SERVER6, ...opts.stack });
  const v6 = opts.family === 6;
  const peerAddr = v6 ? parseIpv6(CLIENT6)! : parseIpv4(PEER4)!;
  const stackAddr = v6 ? parseIpv6(SERVER6)! : parseIpv4(SERVER4)!;
  const got: ReturnType<typeof summarize>[] = [];
  const raw: Buffer[] = [];
  pair.b[0].onReceive((batch) => {
    for (let i = 0; i < batch.count; i++) {
      const off = batch.offsets[2 * i];
      const pkt = Buffer.from(batch.buffer.subarray(off, off + batch.offsets[2 * i + 1]));
      if (!tcpChecksumValid(pkt)) throw new Error("stack sent a bad TCP checksum");
      if (!v6 && !ipv4HeaderChecksumValid(pkt, 0)) throw new Error("bad IPv4 header checksum");
      raw.push(pkt);
      got.push(summarize(pkt));
    }
  });
  const send = (s: {
    srcPort?: number;
    dstPort?: number;
    seq: number;
    ack: number;
    flags: number;
    payload?: Uint8Array;
    /** Raw option bytes (e.g. a SYN with our negotiation option). */
    options?: Uint8Array;
    /** Source address instead of the peer's (IPv4 as a number, IPv6 as four words). */
    src?: number | number[];
  }) =>
    pair.b[0].write(
      buildPacket({
        src: s.src ?? peerAddr,
        dst: stackAddr,
        srcPort: s.srcPort ?? 40000,
        dstPort: s.dstPort ?? 4567,
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        payload: s.payload,
        rawOptions: s.options,
      }),
    );
  /** Takes (and removes) everything received so far. */
  const take = () => got.splice(0);
  /**
   * Plays a phantun client's handshake against the stack's listener: SYN seq 0, then ACK with
   * seq 1 and ack = the SYN-ACK's seq (the server's ISN, a cookie) + 1, carrying `payload` as
   * the first data segment when given. Takes what the stack sent; returns the server's ISN.
   */
  const handshake = async (
    o: {
      srcPort?: number;
      payload?: Uint8Array;
      options?: Uint8Array;
      src?: number | number[];
    } = {},
  ): Promise<number> => {
    send({
      src: o.src,
      srcPort: o.srcPort,
      seq: 0,
      ack: 0,
      flags: TcpFlags.SYN,
      options: o.options,
    });
    await pair.settle();
    const port = o.srcPort ?? 40000;
    const synAck = take().find(
      (x) => x.flags === (TcpFlags.SYN | TcpFlags.ACK) && x.dstPort === port,
    );
    if (synAck === undefined) throw new Error(`no SYN-ACK for port ${port}`);
    send({
      src: o.src,
      srcPort: o.srcPort,
      seq: 1,
      ack: (synAck.seq + 1) >>> 0,
      flags: TcpFlags.ACK,
      payload: o.payload,
    });
    return synAck.seq;
  };
  raw.length = 0;
  return {
    pair,
    stack,
    got,
    raw,
    send,
    take,
    handshake,
    settle: pair.settle,
    close: () => stack.close(),
  };
}

/**
 * For a test file's top level: registers an afterEach that closes what the file's tests made
 * (even when a test fails, so no stack's timers outlive it) and puts real timers back.
 * `peer` and `pairOf` are {@link rawPeer} and {@link twoStacks} with their close registered;
 * `closeLater` registers any other close.
 */
export function closedAfterEachTest() {
  const closers: Array<() => void> = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
    vi.useRealTimers();
  });
  const closeLater = (close: () => void): void => {
    closers.push(close);
  };
  const peer = (opts: Parameters<typeof rawPeer>[0] = {}) => {
    const p = rawPeer(opts);
    closeLater(p.close);
    return p;
  };
  const pairOf = (opts: Parameters<typeof twoStacks>[0] = {}) => {
    const t = twoStacks(opts);
    closeLater(t.close);
    return t;
  };
  return { closeLater, peer, pairOf };
}

/**
 * xorshift32: a seeded stream of random 32-bit values, so that sampling tests repeat; unsigned,
 * or with `signed` as int32 (the form the stack's sequence arithmetic takes).
 */
export function xorshift32(seed: number, signed = false): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return signed ? x | 0 : x >>> 0;
  };
}
