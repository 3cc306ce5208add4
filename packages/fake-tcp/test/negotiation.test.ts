/**
 * The handshake negotiation by which two programs of ours recognise each other (our option in
 * the SYN, echoed in the SYN-ACK), its absence with phantun-like peers, and the strict, safe
 * parsing of the options it relies on.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  emitTcpHeader,
  OURS_OPTION,
  OursOption,
  scanOursOption,
  TCP_OPTION_EXPERIMENT,
  TcpFlags,
} from "../src/wire/index.js";
import { closedAfterEachTest } from "./helpers.js";

const { SYN, ACK } = TcpFlags;
const WS14 = [1, 3, 3, 14];
const OURS = Buffer.from([254, 4, 0x46, 0x54]);

const { peer, pairOf } = closedAfterEachTest();

describe("the option's bytes", () => {
  it("is kind 254, length 4, experiment id 0x4654", () => {
    expect(OURS_OPTION).toEqual([...OURS]);
    expect(TCP_OPTION_EXPERIMENT).toBe(254);
  });

  it("our SYN's TCP header: data offset 7, NOP, WS 14, then the option", () => {
    const buf = new Uint8Array(28);
    expect(emitTcpHeader(buf, 0, 40000, 4567, 0, 0, SYN, true, true)).toBe(28);
    expect(Buffer.from(buf).toString("hex")).toBe(
      "9c4011d7" + "00000000" + "00000000" + "7002ffff" + "00000000" + "0103030e" + "fe044654",
    );
  });
});

describe("negotiation between two stacks of ours", () => {
  for (const family of [4, 6] as const)
    it(`IPv${family}: both ends mark the peer as ours`, async () => {
      const t = pairOf();
      t.server.listen(7000);
      const target = family === 4 ? "192.168.201.2:7000" : "[fcc9::2]:7000";
      const [c, s] = await Promise.all([t.client.connect(target), t.server.accept()]);
      expect(c.peerIsOurs).toBe(true);
      expect(s.peerIsOurs).toBe(true);
      expect(t.client.stats().negotiated).toBe(1);
      expect(t.server.stats().negotiated).toBe(1);
    });

  it("a middlebox that strips the option: both fall back to phantun behaviour", async () => {
    const t = pairOf();
    t.server.listen(7000);
    // Overwrite our option with NOPs on the way to the server (what a stripping middlebox
    // that keeps the header length does; the checksum is not checked by the stack).
    let stripped = 0;
    t.pair.aToB.filter = (pkt: Buffer) => {
      const tcp = 20;
      if ((pkt[tcp + 13] & SYN) !== 0 && pkt[tcp + 12] >>> 4 === 7) {
        pkt.fill(1, tcp + 24, tcp + 28);
        stripped++;
      }
      return true;
    };
    const [c, s] = await Promise.all([t.client.connect("192.168.201.2:7000"), t.server.accept()]);
    expect(stripped).toBe(1);
    expect(c.peerIsOurs).toBe(false);
    expect(s.peerIsOurs).toBe(false);
    expect(t.client.stats().negotiated + t.server.stats().negotiated).toBe(0);
  });
});

describe("against phantun-like peers", () => {
  it("server: a SYN with NOP + WS 14 only gets exactly NOP + WS 14 back, peer not ours", async () => {
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 0, ack: 0, flags: SYN, options: Uint8Array.from(WS14) });
    await p.settle();
    const [synAck] = p.take();
    expect(synAck.flags).toBe(SYN | ACK);
    expect(synAck.options).toEqual(Buffer.from(WS14));
    expect(synAck.length).toBe(44);
    p.send({ seq: 1, ack: (synAck.seq + 1) >>> 0, flags: ACK });
    const s = await p.stack.accept();
    expect(s.peerIsOurs).toBe(false);
    expect(p.stack.stats().negotiated).toBe(0);
  });

  it("server: a SYN with our option gets it echoed after NOP + WS 14, peer is ours", async () => {
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 0, ack: 0, flags: SYN, options: Uint8Array.from([...WS14, ...OURS]) });
    await p.settle();
    const [synAck] = p.take();
    expect(synAck.options).toEqual(Buffer.from([...WS14, ...OURS]));
    expect(synAck.headerLength).toBe(28);
    p.send({ seq: 1, ack: (synAck.seq + 1) >>> 0, flags: ACK });
    const s = await p.stack.accept();
    expect(s.peerIsOurs).toBe(true);
    expect(p.stack.stats().negotiated).toBe(1);
  });

  it("client: a SYN-ACK with NOP + WS 14 only (phantun server) leaves the peer not ours", async () => {
    const p = peer();
    const conn = p.stack.connect("192.168.200.2:4567");
    await p.settle();
    const [syn] = p.take();
    expect(syn.options).toEqual(Buffer.from([...WS14, ...OURS]));
    p.send({
      srcPort: 4567,
      dstPort: syn.srcPort,
      seq: 0,
      ack: 1,
      flags: SYN | ACK,
      options: Uint8Array.from(WS14),
    });
    const c = await conn;
    expect(c.peerIsOurs).toBe(false);
  });

  it("client: a SYN-ACK echoing our option marks the peer as ours", async () => {
    const p = peer();
    const conn = p.stack.connect("192.168.200.2:4567");
    await p.settle();
    const [syn] = p.take();
    p.send({
      srcPort: 4567,
      dstPort: syn.srcPort,
      seq: 1234,
      ack: 1,
      flags: SYN | ACK,
      options: Uint8Array.from([...WS14, ...OURS]),
    });
    const c = await conn;
    expect(c.peerIsOurs).toBe(true);
  });

  it("malformed options: the handshake goes on as with phantun, counted, never ours", async () => {
    const p = peer();
    p.stack.listen(4567);
    const bad = [
      [...WS14, 254, 5, 0x46, 0x54, 0], // our id with the wrong length
      [1, 1, 1, 254], // kind without a length byte
      [254, 1, 0x46, 0x54], // length below 2
      [254, 0, 0x46, 0x54], // length 0 (would loop forever if trusted)
      [...OURS, 8, 30], // ours, then an option running past the area
    ];
    bad.forEach((b, i) => {
      p.send({ srcPort: 41000 + i, seq: 0, ack: 0, flags: SYN, options: Uint8Array.from(b) });
    });
    await p.settle();
    const synAcks = p.take();
    expect(synAcks).toHaveLength(bad.length);
    for (const sa of synAcks) {
      expect(sa.flags).toBe(SYN | ACK);
      expect(sa.options).toEqual(Buffer.from(WS14));
      p.send({ srcPort: sa.dstPort, seq: 1, ack: (sa.seq + 1) >>> 0, flags: ACK });
    }
    for (let i = 0; i < bad.length; i++) expect((await p.stack.accept()).peerIsOurs).toBe(false);
    expect(p.stack.stats().synOptionsMalformed).toBe(bad.length);
  });
});

describe("scanOursOption", () => {
  const scan = (b: number[]) => scanOursOption(Uint8Array.from(b), 0, b.length);

  it("fixed cases", () => {
    expect(scan([])).toBe(OursOption.absent);
    expect(scan(WS14)).toBe(OursOption.absent);
    expect(scan([...WS14, ...OURS])).toBe(OursOption.present);
    expect(scan([...OURS])).toBe(OursOption.present);
    expect(scan([2, 4, 5, 180, ...OURS, 1, 1, 1, 1])).toBe(OursOption.present);
    // Another experiment (TCP Fast Open's id 0xF989) is not ours.
    expect(scan([254, 4, 0xf9, 0x89])).toBe(OursOption.absent);
    // Our bytes after the end-of-list are padding, not an option.
    expect(scan([0, ...OURS])).toBe(OursOption.absent);
    // Our bytes inside another option's data are not an option.
    expect(scan([30, 6, ...OURS])).toBe(OursOption.absent);
    expect(scan([254, 5, 0x46, 0x54, 0])).toBe(OursOption.malformed);
    // A well-formed experiment too short to carry an id: not ours, not malformed.
    expect(scan([254, 3, 0x46])).toBe(OursOption.absent);
    expect(scan([3])).toBe(OursOption.malformed);
    expect(scan([3, 0])).toBe(OursOption.malformed);
    expect(scan([3, 9, 1])).toBe(OursOption.malformed);
  });

  it("only reads inside the area it is given", () => {
    // Our option just past the end of the area, and a length that points past it.
    const buf = Uint8Array.from([1, 1, 254, 4, 0x46, 0x54]);
    expect(scanOursOption(buf, 0, 2)).toBe(OursOption.absent);
    expect(scanOursOption(buf, 0, 4)).toBe(OursOption.malformed);
    expect(scanOursOption(buf, 2, 4)).toBe(OursOption.present);
  });

  it("never throws, and finds ours wherever a well-formed list carries it", () => {
    // Well-formed option lists: NOPs and options of kinds 2..253 with their own lengths.
    const other = fc.oneof(
      fc.constant([1]),
      fc
        .tuple(fc.integer({ min: 2, max: 253 }), fc.uint8Array({ maxLength: 6 }))
        .map(([k, d]) => [k, d.length + 2, ...d]),
    );
    fc.assert(
      fc.property(
        fc.array(other, { maxLength: 6 }),
        fc.array(other, { maxLength: 6 }),
        fc.boolean(),
        (before, after, withOurs) => {
          const list = [...before.flat(), ...(withOurs ? OURS : []), ...after.flat()];
          fc.pre(list.length <= 40);
          expect(scan(list)).toBe(withOurs ? OursOption.present : OursOption.absent);
        },
      ),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 44 }), fc.nat(44), fc.nat(44), (bytes, o, l) => {
        const off = Math.min(o, bytes.length);
        const len = Math.min(l, bytes.length - off);
        const r = scanOursOption(bytes, off, len);
        expect([OursOption.absent, OursOption.present, OursOption.malformed]).toContain(r);
        // Present only if the four bytes of our option occur inside the area.
        if (r === OursOption.present)
          expect(Buffer.from(bytes.subarray(off, off + len)).indexOf(OURS)).toBeGreaterThanOrEqual(
            0,
          );
      }),
    );
  });
});
