/**
 * SYN cookies: the keyed hash (known answers), cookie layout, time-slot edges, tuple binding,
 * sequence wrap-around at 2^32, and the stack's stateless listener built on them.
 */
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { halfSipHash } from "../src/stack/keyed-hash.js";
import type { SegmentTuple } from "../src/stack/segment-writer.js";
import { COOKIE_SLOT_MS, CookieBits, SynCookies } from "../src/stack/syn-cookies.js";
import { TcpFlags } from "../src/wire/index.js";
import { closedAfterEachTest, rawPeer } from "./helpers.js";

const { SYN, ACK, RST } = TcpFlags;
const KEY = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
/** A time in the middle of the history, at the start of a slot. */
const T0 = 27_000 * COOKIE_SLOT_MS;

const { peer, pairOf } = closedAfterEachTest();

function tuple(o: Partial<SegmentTuple> = {}): SegmentTuple {
  return {
    family: 4,
    r0: 0xc0a8c802 | 0,
    r1: 0,
    r2: 0,
    r3: 0,
    l0: 0xc0a8c902 | 0,
    l1: 0,
    l2: 0,
    l3: 0,
    remotePort: 40000,
    localPort: 4567,
    pseudoBase: 0,
    ipBase: 0,
    ...o,
  };
}

const i32 = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
const tupleArb = fc
  .record({
    family: fc.constantFrom(4 as const, 6 as const),
    r: fc.tuple(i32, i32, i32, i32),
    l: fc.tuple(i32, i32, i32, i32),
    remotePort: fc.integer({ min: 0, max: 65535 }),
    localPort: fc.integer({ min: 1, max: 65535 }),
  })
  .map(({ family, r, l, remotePort, localPort }) =>
    family === 4
      ? tuple({ family, r0: r[0], l0: l[0], remotePort, localPort })
      : tuple({
          family,
          r0: r[0],
          r1: r[1],
          r2: r[2],
          r3: r[3],
          l0: l[0],
          l1: l[1],
          l2: l[2],
          l3: l[3],
          remotePort,
          localPort,
        }),
  );
const flagsArb = fc.constantFrom(0, CookieBits.ours, CookieBits.generation, 5);
const timeArb = fc.integer({ min: COOKIE_SLOT_MS, max: 2 ** 45 });

describe("keyed hash (HalfSipHash-2-4, 32-bit result)", () => {
  it("matches the reference known answers for key 00..07 and messages 00..(n-1)", () => {
    const k0 = 0x03020100;
    const k1 = 0x07060504;
    const expected: Record<number, number> = {
      0: 0x5b9f35a9,
      4: 0x89466e2a,
      8: 0x8f84b8d0,
      12: 0x2f87f057,
    };
    for (const [n, want] of Object.entries(expected).map(([k, v]) => [Number(k), v])) {
      const words = new Int32Array(n / 4);
      for (let i = 0; i < n; i += 4)
        words[i / 4] = i | ((i + 1) << 8) | ((i + 2) << 16) | ((i + 3) << 24);
      expect((halfSipHash(k0, k1, words, n / 4) >>> 0).toString(16)).toBe(want.toString(16));
    }
  });
});

describe("SynCookies", () => {
  it("layout: flag bits in 0..2 (parity = slot & 1), MAC above", () => {
    const c = new SynCookies(KEY);
    const t = tuple();
    for (const flags of [0, 1, 4, 5]) {
      const even = c.make(t, T0, flags);
      const odd = c.make(t, T0 + COOKIE_SLOT_MS, flags);
      expect(even & 7).toBe(flags);
      expect(odd & 7).toBe(flags | CookieBits.parity);
      expect(c.check(t, even, T0)).toBe(flags);
      expect(c.check(t, odd, T0 + COOKIE_SLOT_MS)).toBe(flags | CookieBits.parity);
    }
    // The caller cannot set the parity bit itself.
    expect(c.make(t, T0, CookieBits.parity) & 7).toBe(0);
  });

  it("time-slot edges: valid for the rest of its slot and the whole next one, never before", () => {
    const c = new SynCookies(KEY);
    const t = tuple();
    const first = c.make(t, T0, 0);
    const last = c.make(t, T0 + COOKIE_SLOT_MS - 1, 0);
    expect(last).toBe(first); // same slot, same cookie
    expect(c.check(t, first, T0)).toBe(0);
    expect(c.check(t, first, T0 + 2 * COOKIE_SLOT_MS - 1)).toBe(0);
    expect(c.check(t, first, T0 + 2 * COOKIE_SLOT_MS)).toBe(-1);
    expect(c.check(t, first, T0 + 3 * COOKIE_SLOT_MS)).toBe(-1);
    expect(c.check(t, first, T0 - 1)).toBe(-1); // a clock that went back
    const next = c.make(t, T0 + COOKIE_SLOT_MS, 0);
    expect(next).not.toBe(first);
  });

  it("property: valid for its tuple within two slots, with the flags it was made with", () => {
    const c = new SynCookies(KEY);
    fc.assert(
      fc.property(
        tupleArb,
        flagsArb,
        timeArb,
        fc.integer({ min: 0, max: 2 * COOKIE_SLOT_MS - 1 }),
        (t, flags, now, later) => {
          const cookie = c.make(t, now, flags);
          const slotStart = Math.floor(now / COOKIE_SLOT_MS) * COOKIE_SLOT_MS;
          const at = slotStart + later;
          expect(c.check(t, cookie, at) & ~CookieBits.parity).toBe(flags);
          expect(c.check(t, cookie, slotStart + 2 * COOKIE_SLOT_MS)).toBe(-1);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("property: bound to the tuple, the key and every bit of itself", () => {
    const c = new SynCookies(KEY);
    const other = new SynCookies(Uint8Array.from([8, 7, 6, 5, 4, 3, 2, 1]));
    fc.assert(
      fc.property(
        tupleArb,
        tupleArb,
        flagsArb,
        timeArb,
        fc.integer({ min: 0, max: 31 }),
        (t, u, flags, now, bit) => {
          const cookie = c.make(t, now, flags);
          const same =
            t.family === u.family &&
            t.r0 === u.r0 &&
            t.r1 === u.r1 &&
            t.r2 === u.r2 &&
            t.r3 === u.r3 &&
            t.l0 === u.l0 &&
            t.l1 === u.l1 &&
            t.l2 === u.l2 &&
            t.l3 === u.l3 &&
            t.remotePort === u.remotePort &&
            t.localPort === u.localPort;
          if (!same) expect(c.check(u, cookie, now)).toBe(-1);
          expect(other.check(t, cookie, now)).toBe(-1);
          expect(c.check(t, cookie ^ (1 << bit), now)).toBe(-1);
          // One port or address word apart is another tuple.
          expect(c.check({ ...t, localPort: (t.localPort + 1) & 0xffff }, cookie, now)).toBe(-1);
          expect(c.check({ ...t, r3: (t.r3 + 1) | 0, family: 6 }, cookie, now)).toBe(-1);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("property: the ack that proves it is cookie + 1 modulo 2^32, and back", () => {
    fc.assert(
      fc.property(fc.oneof(i32, fc.constantFrom(-1, 0, 0x7fffffff, -(2 ** 31))), (cookie) => {
        const ack = (cookie + 1) >>> 0; // what the wire carries, unsigned
        expect((ack - 1) | 0).toBe(cookie | 0);
        if (cookie === -1) expect(ack).toBe(0);
      }),
    );
  });

  it("a key must be 8 bytes", () => {
    expect(() => new SynCookies(new Uint8Array(7))).toThrow(RangeError);
  });
});

describe("the stateless listener", () => {
  /** A listener that answered a SYN 1 s into a cookie slot; `ack` is what proves it. */
  async function synAnsweredInSlot() {
    vi.useFakeTimers({ now: T0 + 1000 });
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const [synAck] = p.take();
    return { p, ack: (synAck.seq + 1) >>> 0 };
  }

  it("an ACK after the cookie's two slots fails (counted, RST+ACK like an unknown tuple)", async () => {
    const { p, ack } = await synAnsweredInSlot();
    await vi.advanceTimersByTimeAsync(2 * COOKIE_SLOT_MS - 1000);
    p.send({ seq: 1, ack, flags: ACK, payload: Buffer.from("late") });
    await p.settle();
    expect(p.take().map((x) => [x.flags, x.seq, x.ack])).toEqual([[RST | ACK, ack, 5]]);
    expect(p.stack.stats()).toMatchObject({ connections: 0, cookieFailed: 1, accepted: 0 });
  });

  it("an ACK late in the next slot still succeeds", async () => {
    const { p, ack } = await synAnsweredInSlot();
    await vi.advanceTimersByTimeAsync(2 * COOKIE_SLOT_MS - 1001);
    p.send({ seq: 1, ack, flags: ACK });
    await p.settle();
    expect(p.stack.stats()).toMatchObject({ connections: 1, accepted: 1, cookieFailed: 0 });
  });

  it("a server ISN of 0xffffffff: the ACK's ack is 0, our sequence numbers wrap", async () => {
    const p = peer();
    // Cookies are unpredictable by design: stand in one that makes the ISN 2^32 - 1.
    class WrapCookies extends SynCookies {
      override make(): number {
        return -1;
      }
      override check(_t: SegmentTuple, cookie: number): number {
        return cookie === -1 ? 0 : -1;
      }
    }
    const opens = (p.stack as unknown as { opens: object }).opens;
    Object.defineProperty(opens, "cookies", { value: new WrapCookies(KEY) });
    p.stack.listen(4567);
    p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const [synAck] = p.take();
    expect(synAck.seq).toBe(0xffffffff);
    p.send({ seq: 1, ack: 0, flags: ACK, payload: Buffer.from("x") });
    const s = await p.stack.accept();
    s.send(Buffer.from("abc"));
    s.send(Buffer.from("de"));
    await p.settle();
    const data = p.take().filter((x) => x.payload.length > 0);
    expect(data.map((x) => x.seq)).toEqual([0, 3]);
  });

  it("property: any flood of SYNs from any tuples leaves the table empty", () => {
    return fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            srcPort: fc.integer({ min: 1, max: 65535 }),
            withOption: fc.boolean(),
          }),
          { minLength: 1, maxLength: 200 },
        ),
        async (syns) => {
          const p = rawPeer({ stack: { maxConnections: 1 } });
          try {
            p.stack.listen(4567);
            for (const s of syns)
              p.send({
                srcPort: s.srcPort,
                seq: 0,
                ack: 0,
                flags: SYN,
                options: s.withOption
                  ? Uint8Array.from([1, 3, 3, 14, 254, 4, 0x46, 0x54])
                  : undefined,
              });
            await p.settle();
            expect(p.stack.stats()).toMatchObject({
              connections: 0,
              cookiesSent: syns.length,
              refusedFull: 0,
            });
          } finally {
            p.close();
          }
        },
      ),
      { numRuns: 30 },
    );
  });
});

describe("lost final ACK", () => {
  /** Two stacks, the server listening on 7000, and the client's final handshake ACK dropped. */
  function finalAckLost(opts: Parameters<typeof pairOf>[0] = {}) {
    const t = pairOf(opts);
    t.server.listen(7000);
    let dropped = 0;
    t.pair.aToB.filter = (pkt) => {
      // The client's final ACK: flags ACK, no payload (IPv4, 20-byte TCP header).
      if (pkt[33] === ACK && pkt.length === 40 && dropped === 0) {
        dropped++;
        return false;
      }
      return true;
    };
    return { ...t, dropped: () => dropped };
  }

  it("is repaired by the client's first data segment", async () => {
    const t = finalAckLost();
    const c = await t.client.connect("192.168.201.2:7000");
    await t.pair.settle();
    expect(t.dropped()).toBe(1);
    expect(t.server.stats().connections).toBe(0);
    c.send(Buffer.from("first"));
    const s = await t.server.accept();
    const it = s[Symbol.asyncIterator]();
    expect((await it.next()).value.toString()).toBe("first");
    expect(s.peerIsOurs).toBe(true);
  });

  it("is repaired by our client's first keepalive (a pure ACK with seq 1)", async () => {
    const t = finalAckLost({ client: { keepaliveIntervalMs: 5000 } });
    const c = await t.client.connect("192.168.201.2:7000");
    const s = await t.server.accept();
    await t.pair.settle();
    expect(t.dropped()).toBe(1);
    expect(s.peerIsOurs).toBe(true);
    expect(c.counters.keepalivesSent).toBe(1);
  });

  it("an ACK with seq other than 1 proves nothing (seq 0 included)", async () => {
    const p = peer();
    p.stack.listen(4567);
    p.send({
      seq: 0,
      ack: 0,
      flags: SYN,
      options: Uint8Array.from([1, 3, 3, 14, 254, 4, 0x46, 0x54]),
    });
    await p.settle();
    const [synAck] = p.take();
    for (const seq of [0, 2, 0xffffffff]) p.send({ seq, ack: (synAck.seq + 1) >>> 0, flags: ACK });
    await p.settle();
    expect(p.take().map((x) => x.flags)).toEqual([RST | ACK, RST | ACK, RST | ACK]);
    expect(p.stack.stats()).toMatchObject({ connections: 0, cookieFailed: 0 });
  });
});

describe("peer restart on an established tuple", () => {
  it("replaces only on proof, then again on the next restart (generations alternate)", async () => {
    const p = peer();
    p.stack.listen(4567);
    const isns = [await p.handshake()];
    let s = await p.stack.accept();
    for (let round = 0; round < 3; round++) {
      p.send({ seq: 0, ack: 0, flags: SYN });
      await p.settle();
      const [synAck] = p.take();
      expect(synAck.flags).toBe(SYN | ACK);
      // Never the ISN of the connection it would replace (two back it may be, same slot).
      expect(synAck.seq).not.toBe(isns[isns.length - 1]);
      expect(s.established).toBe(true);
      const next = p.stack.accept();
      p.send({ seq: 1, ack: (synAck.seq + 1) >>> 0, flags: ACK });
      const s2 = await next;
      expect(s.closeInfo?.cause).toBe("peer-restarted");
      isns.push(synAck.seq);
      s = s2;
    }
    expect(p.stack.stats()).toMatchObject({ connections: 1, accepted: 4 });
    expect(p.stack.stats().closed["peer-restarted"]).toBe(3);
  });

  it("a SYN alone (e.g. spoofed) never closes the connection; the pending restart expires", async () => {
    vi.useFakeTimers({ now: T0 });
    const p = peer();
    p.stack.listen(4567);
    const isn = await p.handshake();
    const s = await p.stack.accept();
    for (let i = 0; i < 50; i++) p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const synAcks = p.take().filter((x) => x.flags === (SYN | ACK));
    expect(synAcks).toHaveLength(50);
    // Keep the connection alive past the cookie's lifetime, then prove the old cookie.
    for (let i = 0; i < 3; i++) {
      await vi.advanceTimersByTimeAsync(COOKIE_SLOT_MS);
      p.send({ seq: 1, ack: (isn + 1) >>> 0, flags: ACK, payload: Buffer.from([i]) });
    }
    p.send({ seq: 1, ack: (synAcks[0].seq + 1) >>> 0, flags: ACK });
    await p.settle();
    expect(s.established).toBe(true);
    expect(p.stack.stats().closed["peer-restarted"]).toBe(0);
  });
});
