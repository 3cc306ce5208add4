import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  buildPacket,
  dataHeaderLength,
  emitIpv4Header,
  emitIpv6Header,
  emitTcpHeader,
  encodeTcpOptions,
  finishChecksum,
  formatIpv4,
  formatIpv6,
  internetChecksum,
  ipHeaderLength,
  ipv4HeaderChecksumValid,
  ipv4PseudoBase,
  ipv6PseudoBase,
  maxSegmentedPayload,
  newIpv4Repr,
  newIpv6Repr,
  newTcpRepr,
  ParseError,
  parseEndpoint,
  parseIpv4,
  parseIpv4Header,
  parseIpv6,
  parseIpv6Header,
  parseTcpHeader,
  pseudoHeaderSeed,
  SegmentParser,
  sumWords,
  TcpFlags,
  tcpChecksumValid,
} from "../src/wire/index.js";
import { parseTcpOptions } from "./tcp-options.js";

/** Byte-at-a-time RFC 1071 reference, deliberately naive. */
function naiveChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    const word = (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
    sum += word;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const v6addr = fc.tuple(u32, u32, u32, u32);

describe("internet checksum", () => {
  it("matches a naive reference on random data and offsets", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat(40), (data, cut) => {
        const off = Math.min(cut, data.length);
        expect(internetChecksum(data, off)).toBe(naiveChecksum(data.subarray(off)));
      }),
      { numRuns: 500 },
    );
  });

  it("handles large sums without losing carries", () => {
    const data = new Uint8Array(70_000).fill(0xff);
    expect(internetChecksum(data)).toBe(naiveChecksum(data));
  });

  it("pseudo-header seed plus header and payload sum equals the full checksum", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        u32,
        u32,
        v6addr,
        v6addr,
        fc.uint8Array({ maxLength: 1500 }),
        (v4, s4, d4, s6, d6, payload) => {
          const spec = {
            src: v4 ? s4 : s6,
            dst: v4 ? d4 : d6,
            srcPort: 1,
            dstPort: 2,
            seq: 3,
            ack: 4,
            flags: TcpFlags.ACK,
            payload,
          };
          const full = buildPacket(spec);
          const seeded = buildPacket({ ...spec, seedOnly: true });
          const t = v4 ? 20 : 40;
          const seed = seeded.readUInt16BE(t + 16);
          const pseudo = v4 ? ipv4PseudoBase(s4, d4) : ipv6PseudoBase(s6, d6);
          expect(seed).toBe(pseudoHeaderSeed(pseudo, full.length - t));
          // What the kernel does under offload: sum the segment with the seed in place.
          const completed = finishChecksum(sumWords(seeded, t, seeded.length - t));
          expect(completed).toBe(full.readUInt16BE(t + 16));
          expect(tcpChecksumValid(full)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("IPv4 header", () => {
  it("round-trips what we build", () => {
    fc.assert(
      fc.property(u32, u32, fc.integer({ min: 0, max: 65515 }), (src, dst, len) => {
        const buf = new Uint8Array(20 + len);
        emitIpv4Header(buf, 0, src, dst, len);
        buf[9] = 6;
        const r = newIpv4Repr();
        expect(parseIpv4Header(buf, 0, buf.length, r)).toBe(ParseError.ok);
        expect(r).toMatchObject({ src, dst, protocol: 6, ttl: 64, tos: 0, identification: 0 });
        expect(r.dontFragment).toBe(true);
        expect(r.payloadLength).toBe(len);
        expect(ipv4HeaderChecksumValid(buf, 0)).toBe(true);
      }),
    );
  });

  it("tolerates options and rejects fragments, bad lengths and truncation", () => {
    const base = buildPacket({ src: 1, dst: 2, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 2 });
    // Insert 8 bytes of options (NOPs) after the fixed header.
    const withOpts = Buffer.concat([base.subarray(0, 20), Buffer.alloc(8, 1), base.subarray(20)]);
    withOpts[0] = 0x47;
    withOpts.writeUInt16BE(withOpts.length, 2);
    const p = new SegmentParser();
    expect(p.parse(withOpts, 0, withOpts.length)).toBe(ParseError.ok);
    expect(p.ip4.headerLength).toBe(28);
    expect(p.tcp.dstPort).toBe(2);
    const frag = Buffer.from(base);
    frag[6] = 0x20; // more fragments
    expect(p.parse(frag, 0, frag.length)).toBe(ParseError.fragment);
    const r = newIpv4Repr();
    expect(parseIpv4Header(base, 0, 19, r)).toBe(ParseError.truncated);
    const ihl = Buffer.from(base);
    ihl[0] = 0x44;
    expect(parseIpv4Header(ihl, 0, ihl.length, r)).toBe(ParseError.badHeaderLength);
    const total = Buffer.from(base);
    total.writeUInt16BE(base.length + 1, 2);
    expect(parseIpv4Header(total, 0, total.length, r)).toBe(ParseError.truncated);
    total.writeUInt16BE(10, 2);
    expect(parseIpv4Header(total, 0, total.length, r)).toBe(ParseError.badTotalLength);
    const udp = Buffer.from(base);
    udp[9] = 17;
    expect(p.parse(udp, 0, udp.length)).toBe(ParseError.notTcp);
  });
});

describe("IPv6 header", () => {
  it("round-trips what we build", () => {
    fc.assert(
      fc.property(v6addr, v6addr, fc.integer({ min: 0, max: 2000 }), (src, dst, len) => {
        const buf = new Uint8Array(40 + len);
        emitIpv6Header(buf, 0, src, dst, len);
        const r = newIpv6Repr();
        expect(parseIpv6Header(buf, 0, buf.length, r)).toBe(ParseError.ok);
        expect(r.src).toEqual(src);
        expect(r.dst).toEqual(dst);
        expect(r).toMatchObject({ nextHeader: 6, hopLimit: 64, flowLabel: 0, trafficClass: 0 });
        expect(r.payloadLength).toBe(len);
      }),
    );
  });

  it("refuses extension headers and other protocols", () => {
    const pkt = buildPacket({
      src: [0xfcc80000, 0, 0, 1],
      dst: [0xfcc80000, 0, 0, 2],
      srcPort: 1,
      dstPort: 2,
      seq: 0,
      ack: 0,
      flags: 2,
    });
    const r = newIpv6Repr();
    for (const nh of [0, 43, 44, 60]) {
      const x = Buffer.from(pkt);
      x[6] = nh;
      expect(parseIpv6Header(x, 0, x.length, r)).toBe(ParseError.ipv6ExtensionHeader);
    }
    const udp = Buffer.from(pkt);
    udp[6] = 17;
    expect(parseIpv6Header(udp, 0, udp.length, r)).toBe(ParseError.notTcp);
    expect(parseIpv6Header(pkt, 0, pkt.length - 1, r)).toBe(ParseError.truncated);
  });
});

describe("TCP header and options", () => {
  const optionsArb = fc.record(
    {
      mss: u16,
      windowScale: fc.integer({ min: 0, max: 14 }),
      sackPermitted: fc.constant(true),
      sack: fc.array(fc.tuple(u32, u32), { minLength: 1, maxLength: 3 }),
      timestamp: fc.record({ value: u32, echo: u32 }),
    },
    { requiredKeys: [] },
  );

  it("round-trips header fields and every option kind", () => {
    fc.assert(
      fc.property(
        u16,
        u16,
        u32,
        u32,
        fc.integer({ min: 0, max: 255 }),
        optionsArb,
        fc.uint8Array({ maxLength: 100 }),
        (sp, dp, seq, ack, flags, options, payload) => {
          fc.pre(encodeTcpOptions(options).length <= 40);
          const pkt = buildPacket({
            src: 0x0a000001,
            dst: 0x0a000002,
            srcPort: sp,
            dstPort: dp,
            seq,
            ack,
            flags,
            options,
            payload,
          });
          const p = new SegmentParser();
          expect(p.parse(pkt, 0, pkt.length)).toBe(ParseError.ok);
          expect(p.tcp).toMatchObject({
            srcPort: sp,
            dstPort: dp,
            seq,
            ack,
            flags,
            window: 0xffff,
          });
          expect(p.tcp.payloadLength).toBe(payload.length);
          expect(Buffer.from(pkt.subarray(p.tcp.payloadOffset))).toEqual(Buffer.from(payload));
          const parsed = parseTcpOptions(pkt, p.tcp.optionsOffset, p.tcp.optionsLength);
          expect(parsed).toEqual(options);
        },
      ),
    );
  });

  it("rejects malformed options without throwing", () => {
    const bad = [
      [2, 3, 0], // MSS with length 3
      [3, 2], // WS too short
      [5, 9, 0, 0, 0, 0, 0, 0, 0], // SACK with a partial block
      [8, 9, 0, 0, 0, 0, 0, 0, 0], // timestamps with length 9
      [30, 1], // length below 2
      [30, 8, 0, 0], // runs past the end
      [2], // kind without a length byte
    ];
    for (const b of bad)
      expect(parseTcpOptions(Uint8Array.from(b), 0, b.length)).toBe(ParseError.badOption);
    expect(parseTcpOptions(Uint8Array.from([1, 1, 0, 99, 99]), 0, 5)).toEqual({});
    expect(parseTcpOptions(Uint8Array.from([99, 2, 1, 1]), 0, 4)).toEqual({ unknown: [99] });
  });

  it("rejects bad data offsets", () => {
    const r = newTcpRepr();
    const seg = new Uint8Array(24);
    seg[12] = 0x40;
    expect(parseTcpHeader(seg, 0, 24, r)).toBe(ParseError.badHeaderLength);
    seg[12] = 0x70;
    expect(parseTcpHeader(seg, 0, 24, r)).toBe(ParseError.badHeaderLength);
    expect(parseTcpHeader(seg, 0, 19, r)).toBe(ParseError.truncated);
  });
});

describe("fixed vectors", () => {
  it("builds the spec's 44-byte IPv4 SYN", () => {
    // Client SYN 192.168.200.2:40000 -> 192.168.201.2:4567, seq 0, NOP + WS 14.
    const src = parseIpv4("192.168.200.2")!;
    const dst = parseIpv4("192.168.201.2")!;
    const buf = new Uint8Array(44);
    emitIpv4Header(buf, 0, src, dst, 24);
    emitTcpHeader(buf, 20, 40000, 4567, 0, 0, TcpFlags.SYN, true);
    const ck = finishChecksum(sumWords(buf, 20, 24, ipv4PseudoBase(src, dst) + 24));
    buf[36] = ck >>> 8;
    buf[37] = ck & 255;
    const expected = Buffer.from(
      "4500002c000040004006" + // version/IHL, TOS 0, length 44, ID 0, DF, TTL 64, TCP
        "2876" + // header checksum: ~(0x4500+0x2c+0x4000+0x4006+addresses) folded, by hand
        "c0a8c802c0a8c902" + // addresses
        "9c4011d7" + // ports 40000 -> 4567
        "0000000000000000" + // seq 0, ack 0
        "6002ffff" + // data offset 6, SYN, window 0xFFFF
        buf[36].toString(16).padStart(2, "0") +
        buf[37].toString(16).padStart(2, "0") +
        "0000" + // urgent pointer
        "0103030e", // NOP, WS 14
      "hex",
    );
    expect(Buffer.from(buf)).toEqual(expected);
    expect(ipv4HeaderChecksumValid(buf, 0)).toBe(true);
    expect(naiveChecksum(buf.subarray(0, 20))).toBe(0);
    expect(tcpChecksumValid(buf)).toBe(true);
    // Independent check of the TCP checksum: naive sum over pseudo-header + segment is zero.
    const pseudo = Buffer.from("c0a8c802c0a8c902" + "0006" + "0018", "hex");
    expect(naiveChecksum(Buffer.concat([pseudo, buf.subarray(20)]))).toBe(0);
  });
});

describe("segment sizes", () => {
  it("a data segment's headers are the IP header and a 20-byte TCP header", () => {
    expect([ipHeaderLength(4), ipHeaderLength(6)]).toEqual([20, 40]);
    expect([dataHeaderLength(4), dataHeaderLength(6)]).toEqual([40, 60]);
  });

  it("the 16-bit IP length describes at most 65535 - 40 (IPv4) or 65535 - 20 (IPv6) payload bytes", () => {
    expect(maxSegmentedPayload(4)).toBe(65_495);
    expect(maxSegmentedPayload(6)).toBe(65_515);
  });
});

describe("addresses", () => {
  it("parses and formats IPv4 and IPv6", () => {
    expect(parseIpv4("192.168.200.2")).toBe(0xc0a8c802);
    expect(formatIpv4(0xc0a8c802)).toBe("192.168.200.2");
    expect(parseIpv6("fcc8::2")).toEqual([0xfcc80000, 0, 0, 2]);
    expect(parseIpv6("::ffff:1.2.3.4")).toEqual([0, 0, 0xffff, 0x01020304]);
    expect(formatIpv6([0xfcc80000, 0, 0, 2])).toBe("fcc8::2");
    expect(formatIpv6([0x20010db8, 0x00010000, 0, 1])).toBe("2001:db8:1::1");
    expect(parseIpv4("1.2.3")).toBeNull();
    expect(parseIpv6("fcc8:::1")).toBeNull();
    fc.assert(
      fc.property(v6addr, (w) => {
        expect(parseIpv6(formatIpv6(w))).toEqual(w);
      }),
    );
  });

  it("parses endpoints", () => {
    expect(parseEndpoint("1.2.3.4:80")).toEqual({ address: "1.2.3.4", port: 80, family: 4 });
    expect(parseEndpoint("[fcc9::2]:443")).toEqual({ address: "fcc9::2", port: 443, family: 6 });
    expect(parseEndpoint({ address: "fcc9::2", port: 1 }).family).toBe(6);
    expect(() => parseEndpoint("fcc9::2:443")).toThrow(TypeError);
    expect(() => parseEndpoint("1.2.3.4:0")).toThrow(TypeError);
  });
});

describe("malformed input", () => {
  it("never throws on random or mutated bytes", () => {
    const p = new SegmentParser();
    const seeds = [
      buildPacket({ src: 1, dst: 2, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 2 }),
      buildPacket({
        src: [1, 2, 3, 4],
        dst: [5, 6, 7, 8],
        srcPort: 1,
        dstPort: 2,
        seq: 0,
        ack: 0,
        flags: 2,
        options: { mss: 1460, sackPermitted: true, timestamp: { value: 1, echo: 0 } },
        payload: new Uint8Array(10),
      }),
    ];
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 120 }),
        fc.nat(1),
        fc.array(fc.tuple(fc.nat(200), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.nat(200),
        (random, which, mutations, cut) => {
          const mutated = Buffer.from(seeds[which]);
          for (const [at, v] of mutations) mutated[at % mutated.length] = v;
          for (const bytes of [random, mutated.subarray(0, Math.min(cut, mutated.length))]) {
            const err = p.parse(bytes, 0, bytes.length);
            if (err === ParseError.ok)
              parseTcpOptions(bytes, p.tcp.optionsOffset, p.tcp.optionsLength);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
