/**
 * Who gets a place in a full connection table: eviction of unused and idle accepted
 * connections instead of a lock-out, and the per-source cap (IPv4 address, IPv6 /64).
 */
import { describe, expect, it, vi } from "vitest";
import type { Socket } from "../src/index.js";
import type { ConnectionTable } from "../src/stack/conn-table.js";
import { EVICT_IDLE_AFTER_MS, EVICT_NO_DATA_AFTER_MS, Evictor } from "../src/stack/eviction.js";
import { SocketState } from "../src/stack/socket.js";
import { parseIpv6, TcpFlags } from "../src/wire/index.js";
import { closedAfterEachTest } from "./helpers.js";

const { SYN, ACK, RST } = TcpFlags;

const { peer } = closedAfterEachTest();

/** IPv4 address 10.0.0.n as the number the packet builder takes. */
const addr = (n: number) => (10 << 24) + n;

interface Conn {
  src: number;
  srcPort: number;
  una: number;
  socket: Socket;
}

/** Completes a handshake from (src, srcPort) and takes the accepted socket. */
async function connect(p: ReturnType<typeof peer>, src: number, srcPort: number): Promise<Conn> {
  const isn = await p.handshake({ src, srcPort });
  const socket = await p.stack.accept();
  expect(socket.remotePort).toBe(srcPort);
  return { src, srcPort, una: (isn + 1) >>> 0, socket };
}

/** A SYN from (src, srcPort): the stack's answer's flags. */
async function synAnswer(p: ReturnType<typeof peer>, src: number | number[], srcPort: number) {
  p.send({ src, srcPort, seq: 0, ack: 0, flags: SYN });
  await p.settle();
  return p.take().find((x) => x.dstPort === srcPort)?.flags;
}

describe("a full table (issue 17: lock-out by filling it)", () => {
  it("connections kept alive by an ACK every 179 s without data are evicted for a new client", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { maxConnections: 20 } });
    p.stack.listen(4567);
    const filler: Conn[] = [];
    for (let i = 0; i < 20; i++) filler.push(await connect(p, addr(1 + (i % 4)), 1000 + i));
    expect(p.stack.stats().connections).toBe(20);
    // The filler keeps every connection alive past the idle timeout with bare ACKs.
    for (let round = 0; round < 3; round++) {
      await vi.advanceTimersByTimeAsync(90_000);
      for (const c of filler)
        p.send({ src: c.src, srcPort: c.srcPort, seq: 1, ack: c.una, flags: ACK });
      await p.settle();
    }
    expect(filler.every((c) => c.socket.established)).toBe(true);
    p.take();
    // A new client gets in: the oldest unused connection makes room, told by an RST.
    const fresh = await connect(p, addr(99), 2000);
    expect(fresh.socket.established).toBe(true);
    const closed = filler.filter((c) => c.socket.closed);
    expect(closed.map((c) => c.srcPort)).toEqual([1000]);
    expect(closed[0].socket.closeInfo?.cause).toBe("evicted");
    expect(p.take()).toMatchObject([{ flags: RST, dstPort: 1000 }]);
    const st = p.stack.stats();
    expect(st).toMatchObject({ connections: 20, evicted: 1, refusedFull: 0 });
    expect(st.closed.evicted).toBe(st.evicted);
  });

  it("unused connections are not evicted in their first seconds", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { maxConnections: 4 } });
    p.stack.listen(4567);
    for (let i = 0; i < 4; i++) await connect(p, addr(1 + i), 1000 + i);
    await vi.advanceTimersByTimeAsync(EVICT_NO_DATA_AFTER_MS - 1000);
    expect(await synAnswer(p, addr(99), 2000)).toBe(RST | ACK);
    expect(p.stack.stats()).toMatchObject({ refusedFull: 1, evicted: 0 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(await synAnswer(p, addr(99), 2001)).toBe(SYN | ACK);
  });

  it("connections in use are never evicted: the idlest idle one goes, or the newcomer is refused", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { maxConnections: 6 } });
    p.stack.listen(4567);
    const conns: Conn[] = [];
    for (let i = 0; i < 6; i++) conns.push(await connect(p, addr(1 + i), 1000 + i));
    const use = (c: Conn) =>
      p.send({
        src: c.src,
        srcPort: c.srcPort,
        seq: 1,
        ack: c.una,
        flags: ACK,
        payload: Buffer.from("d"),
      });
    // All carry data; two then fall silent, the others keep talking.
    for (const c of conns) use(c);
    for (let t = 0; t < EVICT_IDLE_AFTER_MS + 10_000; t += 5_000) {
      await vi.advanceTimersByTimeAsync(5_000);
      for (const c of conns.slice(2)) use(c);
      if (t < 5_000) use(conns[1]); // conns[1] went silent a little later than conns[0]
    }
    await p.settle();
    p.take();
    await connect(p, addr(50), 2000);
    await connect(p, addr(51), 2001);
    expect(conns.map((c) => c.socket.closed)).toEqual([true, true, false, false, false, false]);
    // Now every connection is in use (or too new): the next newcomer is refused.
    expect(await synAnswer(p, addr(52), 2002)).toBe(RST | ACK);
    expect(p.stack.stats()).toMatchObject({ evicted: 2, refusedFull: 1, connections: 6 });
  });

  it("a table full of our own client connections is never evicted from (ENOBUFS)", async () => {
    const p = peer({ stack: { maxConnections: 1 } });
    const first = p.stack.connect("192.168.200.2:4567");
    first.catch(() => {});
    await expect(p.stack.connect("192.168.200.2:4567")).rejects.toMatchObject({ code: "ENOBUFS" });
  });
});

describe("per-source cap", () => {
  it("IPv4: the cap-th + 1 handshake from one address is refused, others are not", async () => {
    const p = peer({ stack: { maxConnectionsPerSource: 3 } });
    p.stack.listen(4567);
    const mine: Conn[] = [];
    for (let i = 0; i < 3; i++) mine.push(await connect(p, addr(1), 1000 + i));
    p.send({ src: addr(1), srcPort: 1003, seq: 0, ack: 0, flags: SYN });
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: RST | ACK, seq: 0, ack: 1, dstPort: 1003 }]);
    expect(p.stack.stats()).toMatchObject({ refusedPerSource: 1, cookiesSent: 3 });
    await connect(p, addr(2), 1003);
    // A proof racing past the cap (SYN answered before the others completed) is refused too.
    p.send({ src: addr(2), srcPort: 1010, seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const [late] = p.take();
    await connect(p, addr(2), 1011);
    await connect(p, addr(2), 1012);
    p.send({ src: addr(2), srcPort: 1010, seq: 1, ack: (late.seq + 1) >>> 0, flags: ACK });
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: RST | ACK, dstPort: 1010 }]);
    expect(p.stack.stats()).toMatchObject({ refusedPerSource: 2, connections: 6 });
    // Once one of its connections closes, the address may connect again.
    mine[0].socket.close();
    await connect(p, addr(1), 1004);
  });

  it("IPv6: counted per /64", async () => {
    const p = peer({ family: 6, stack: { maxConnectionsPerSource: 2 } });
    p.stack.listen(4567);
    const a = parseIpv6("fcc8::2")!;
    const b = parseIpv6("fcc8::abcd:3")!; // same /64
    const other = parseIpv6("fcc8:0:0:1::2")!; // the next /64
    await p.handshake({ src: a, srcPort: 1000 });
    await p.handshake({ src: b, srcPort: 1001 });
    expect(await synAnswer(p, b, 1002)).toBe(RST | ACK);
    expect(await synAnswer(p, other, 1003)).toBe(SYN | ACK);
    expect(p.stack.stats().refusedPerSource).toBe(1);
  });

  it("defaults to a quarter of maxConnections", async () => {
    const p = peer({ stack: { maxConnections: 8 } });
    p.stack.listen(4567);
    await connect(p, addr(1), 1000);
    await connect(p, addr(1), 1001);
    expect(await synAnswer(p, addr(1), 1002)).toBe(RST | ACK);
    expect(p.stack.stats().refusedPerSource).toBe(1);
  });

  it("nonsense values are refused", () => {
    expect(() => peer({ stack: { maxConnectionsPerSource: 0 } })).toThrow(RangeError);
  });
});

describe("Evictor", () => {
  /** Stand-ins with just what eviction looks at. */
  function fakeSockets(n: number, seed: number) {
    let x = seed;
    const rnd = () => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x;
    };
    return Array.from({ length: n }, (_, i) => {
      const used = rnd() % 2 === 0;
      // Distinct times (permutations of the indices), so the expected order has no ties.
      const last = 100_000 + ((i * 7841) % n) * 30;
      return {
        id: i,
        passive: rnd() % 10 !== 0,
        state: SocketState.established as number,
        establishedAt: 100_000 + ((i * 7919) % n) * 30,
        lastReceived: last,
        lastSent: last - (rnd() % 20),
        counters: { datagramsReceived: used ? 1 : 0, datagramsSent: 0 },
      };
    });
  }

  it("hands out unused connections oldest first, then idle ones idlest first, in batches, never an active or client one", () => {
    const socks = fakeSockets(3000, 7);
    const table = {
      forEach: (fn: (s: Socket) => void) => {
        for (const s of socks) fn(s as unknown as Socket);
      },
    };
    const e = new Evictor(table as unknown as ConnectionTable);
    const now = 300_000;
    const expected = socks
      .filter(
        (s) =>
          s.passive &&
          (s.counters.datagramsReceived === 0
            ? now - s.establishedAt >= EVICT_NO_DATA_AFTER_MS
            : now - Math.max(s.lastReceived, s.lastSent) >= EVICT_IDLE_AFTER_MS),
      )
      .sort((a, b) => {
        const ua = a.counters.datagramsReceived === 0;
        const ub = b.counters.datagramsReceived === 0;
        if (ua !== ub) return ua ? -1 : 1;
        return ua
          ? a.establishedAt - b.establishedAt
          : Math.max(a.lastReceived, a.lastSent) - Math.max(b.lastReceived, b.lastSent);
      })
      .map((s) => s.id);
    const got: number[] = [];
    let t = now;
    // The clock moves only in steps of the rescan interval: ranks stay as computed above.
    for (let i = 0; i < 20_000 && got.length < expected.length; i++) {
      const v = e.victim(t) as unknown as (typeof socks)[number] | null;
      if (v === null) {
        t += 250;
        for (const s of socks) {
          s.establishedAt += 250;
          s.lastReceived += 250;
          s.lastSent += 250;
        }
        continue;
      }
      got.push(v.id);
      v.state = SocketState.closed;
    }
    expect(got).toEqual(expected);
    expect(e.victim(t + 1000)).toBeNull();
  });
});
