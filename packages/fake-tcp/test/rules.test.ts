/** Every handshake, RST and unknown-tuple rule of the wire spec, checked packet by packet. */
import { describe, expect, it, vi } from "vitest";
import { TcpFlags } from "../src/wire/index.js";
import { closedAfterEachTest, type rawPeer, SERVER4 } from "./helpers.js";

const { SYN, ACK, RST, FIN, PSH } = TcpFlags;
const WS14 = Buffer.from([1, 3, 3, 14]);
/** NOP + WS 14 followed by our negotiation option (kind 254, experiment id 0x4654). */
const WS14_OURS = Buffer.from([1, 3, 3, 14, 254, 4, 0x46, 0x54]);

const { peer } = closedAfterEachTest();

/** A raw peer that plays the server towards our client stack. */
function clientUnderTest(stackOpts: NonNullable<Parameters<typeof rawPeer>[0]>["stack"] = {}) {
  // rawPeer's stack has address SERVER4 and the peer is PEER4; the stack connects to PEER4.
  const p = peer({ stack: stackOpts });
  const connect = () => p.stack.connect("192.168.200.2:4567");
  const reply = (
    srcPort: number,
    s: { seq: number; ack: number; flags: number; payload?: Uint8Array },
  ) => p.send({ srcPort: 4567, dstPort: srcPort, ...s });
  return { ...p, connect, reply };
}

describe("client handshake rules", () => {
  it("SYN fields, exact SYN-ACK acceptance, final ACK, first data segment", async () => {
    const p = clientUnderTest();
    const conn = p.connect();
    await p.settle();
    const [syn] = p.take();
    expect(syn).toMatchObject({ seq: 0, ack: 0, flags: SYN, window: 0xffff, urgent: 0 });
    // phantun's 44-byte SYN plus our 4-byte option, which a phantun server ignores.
    expect(syn.length).toBe(48);
    expect(syn.headerLength).toBe(28);
    expect(syn.options).toEqual(WS14_OURS);
    expect(syn.srcPort).toBeGreaterThanOrEqual(32768);
    expect(syn.srcPort).toBeLessThanOrEqual(60999);
    const port = syn.srcPort;
    // Wrong ack, extra flag: ignored.
    p.reply(port, { seq: 777, ack: 2, flags: SYN | ACK });
    p.reply(port, { seq: 777, ack: 1, flags: SYN | ACK | PSH });
    p.reply(port, { seq: 777, ack: 1, flags: ACK });
    await p.settle();
    expect(p.take()).toEqual([]);
    expect(p.stack.stats().handshakeIgnored).toBe(3);
    p.reply(port, { seq: 777, ack: 1, flags: SYN | ACK });
    const s = await conn;
    await p.settle();
    const [ackSeg] = p.take();
    expect(ackSeg).toMatchObject({ seq: 1, ack: 778, flags: ACK, headerLength: 20, length: 40 });
    expect(s.send(Buffer.from("abc"))).toBe(true);
    expect(s.send(Buffer.from("defgh"))).toBe(true);
    await p.settle();
    const [d1, d2] = p.take();
    expect(d1).toMatchObject({ seq: 1, ack: 778, flags: ACK, headerLength: 20 });
    expect(d1.payload.toString()).toBe("abc");
    expect(d2).toMatchObject({ seq: 4, ack: 778, flags: ACK });
    expect(s.localAddress).toBe(SERVER4);
    expect(s.remoteAddress).toBe("192.168.200.2");
    expect(s.remotePort).toBe(4567);
  });

  it("an RST during the handshake aborts it (ECONNREFUSED)", async () => {
    const p = clientUnderTest();
    const conn = p.connect();
    await p.settle();
    const [syn] = p.take();
    p.reply(syn.srcPort, { seq: 0, ack: 1, flags: RST | ACK });
    await expect(conn).rejects.toMatchObject({ code: "ECONNREFUSED" });
    expect(p.stack.stats().connections).toBe(0);
  });

  it("retries the SYN every second, 3 attempts, then sends RST and fails (ETIMEDOUT)", async () => {
    vi.useFakeTimers();
    const p = clientUnderTest();
    const conn = p.connect();
    conn.catch(() => {});
    await p.settle();
    expect(p.take().map((x) => x.flags)).toEqual([SYN]);
    await vi.advanceTimersByTimeAsync(1050);
    expect(p.take().map((x) => [x.flags, x.seq])).toEqual([[SYN, 0]]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(p.take().map((x) => [x.flags, x.seq])).toEqual([[SYN, 0]]);
    await vi.advanceTimersByTimeAsync(1000);
    const last = p.take();
    expect(last.map((x) => x.flags)).toEqual([RST]);
    expect(last[0].ack).toBe(0);
    await expect(conn).rejects.toMatchObject({ code: "ETIMEDOUT" });
  });

  it("honours configured attempts and timeout", async () => {
    vi.useFakeTimers();
    const p = clientUnderTest({ handshakeAttempts: 2, handshakeTimeoutMs: 300 });
    const conn = p.connect();
    conn.catch(() => {});
    await vi.advanceTimersByTimeAsync(350);
    expect(p.take().map((x) => x.flags)).toEqual([SYN, SYN]);
    await vi.advanceTimersByTimeAsync(300);
    expect(p.take().map((x) => x.flags)).toEqual([RST]);
    await expect(conn).rejects.toMatchObject({ code: "ETIMEDOUT" });
  });

  it("re-acknowledges a repeated SYN-ACK after establishment", async () => {
    const p = clientUnderTest();
    const conn = p.connect();
    await p.settle();
    const port = p.take()[0].srcPort;
    p.reply(port, { seq: 0, ack: 1, flags: SYN | ACK });
    const s = await conn;
    s.send(Buffer.from("x"));
    await p.settle();
    p.take();
    p.reply(port, { seq: 0, ack: 1, flags: SYN | ACK });
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: ACK, seq: 2, ack: 1 }]);
  });
});

describe("server handshake rules", () => {
  it("answers SYN seq 0 with SYN-ACK (cookie seq) ack 1 + NOP/WS14; completes only on exactly ACK ack = cookie + 1, seq 1", async () => {
    const p = peer();
    p.stack.listen(4567);
    let accepted = false;
    const acc = p.stack.accept().then((s) => {
      accepted = true;
      return s;
    });
    p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const [synAck] = p.take();
    expect(synAck).toMatchObject({ ack: 1, flags: SYN | ACK, srcPort: 4567, dstPort: 40000 });
    expect(synAck.length).toBe(44);
    expect(synAck.options).toEqual(WS14);
    // No state is kept for the handshake (SYN cookies).
    expect(p.stack.stats()).toMatchObject({ connections: 0, cookiesSent: 1 });
    const ack = (synAck.seq + 1) >>> 0;
    // Wrong ack, extra flags, wrong seq: not a proof; answered like any unknown tuple.
    p.send({ seq: 1, ack: (ack + 1) >>> 0, flags: ACK });
    p.send({ seq: 1, ack, flags: ACK | PSH });
    p.send({ seq: 1, ack, flags: ACK | FIN });
    p.send({ seq: 2, ack, flags: ACK });
    await p.settle();
    expect(accepted).toBe(false);
    expect(p.take().map((x) => [x.flags, x.seq, x.ack])).toEqual([
      [RST | ACK, (ack + 1) >>> 0, 1],
      [RST | ACK, ack, 1],
      [RST | ACK, ack, 1],
      [RST | ACK, ack, 2],
    ]);
    expect(p.stack.stats()).toMatchObject({ connections: 0, cookieFailed: 1 });
    p.send({ seq: 1, ack, flags: ACK });
    const s = await acc;
    expect(s.remoteAddress).toBe("192.168.200.2");
    expect(s.remotePort).toBe(40000);
    expect(s.peerIsOurs).toBe(false);
    expect(p.stack.stats()).toMatchObject({ connections: 1, accepted: 1 });
    s.send(Buffer.from("hi"));
    await p.settle();
    expect(p.take()).toMatchObject([{ seq: ack, ack: 1, flags: ACK }]);
  });

  it("a first data segment completes the handshake and is delivered (repairs a lost ACK)", async () => {
    const p = peer();
    p.stack.listen(4567);
    await p.handshake({ payload: Buffer.from("handshake-file") });
    const s = await p.stack.accept();
    const it = s[Symbol.asyncIterator]();
    expect((await it.next()).value.toString()).toBe("handshake-file");
  });

  it("keeps no handshake state: a resent SYN gets the same cookie, nothing is resent by timer", async () => {
    // At the start of a 64 s cookie slot, so that the 5 s below never cross into the next one
    // (a resent SYN there gets the next slot's cookie, rightly).
    vi.useFakeTimers({ now: 27_000_000 * 64_000 });
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const [first] = p.take();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(p.take()).toEqual([]);
    p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: SYN | ACK, seq: first.seq, ack: 1 }]);
    expect(p.stack.stats()).toMatchObject({ connections: 0, cookiesSent: 2 });
  });

  it("the server ISN differs per tuple (a keyed hash, not 0)", async () => {
    const p = peer();
    p.stack.listen(4567);
    for (let port = 40000; port < 40020; port++)
      p.send({ srcPort: port, seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const isns = new Set(p.take().map((x) => x.seq));
    expect(isns.size).toBe(20);
  });

  it("an RST from a client in handshake needs no cleanup: nothing was kept", async () => {
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    p.send({ seq: 1, ack: 0, flags: RST });
    await p.settle();
    expect(p.stack.stats()).toMatchObject({ connections: 0, acceptQueue: 0, rstIgnored: 1 });
  });
});

describe("unknown tuples", () => {
  it("SYN with seq != 0 to a listener: RST+ACK seq 0, ack = seq + len + 1", async () => {
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 1000, ack: 0, flags: SYN });
    p.send({ seq: 0xffffffff, ack: 0, flags: SYN, payload: Buffer.from("12345") });
    await p.settle();
    expect(p.take()).toMatchObject([
      { flags: RST | ACK, seq: 0, ack: 1001, dstPort: 40000, srcPort: 4567, headerLength: 20 },
      { flags: RST | ACK, seq: 0, ack: 5 },
    ]);
    expect(p.stack.stats().connections).toBe(0);
  });

  it("any other non-RST segment: RST+ACK seq = their ack, ack = their seq + len", async () => {
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 500, ack: 7000, flags: ACK, payload: Buffer.alloc(10) });
    p.send({ seq: 9, ack: 0, flags: SYN, dstPort: 9999 }); // SYN to a port nobody listens on
    p.send({ seq: 42, ack: 43, flags: FIN | ACK });
    p.send({ seq: 1, ack: 1, flags: SYN | ACK });
    p.send({ seq: 0, ack: 5, flags: SYN | PSH });
    await p.settle();
    expect(p.take().map((x) => [x.flags, x.seq, x.ack])).toEqual([
      [RST | ACK, 7000, 510],
      [RST | ACK, 0, 9],
      [RST | ACK, 43, 42],
      [RST | ACK, 1, 1],
      [RST | ACK, 5, 0],
    ]);
  });

  it("an RST for an unknown tuple is ignored", async () => {
    const p = peer();
    p.stack.listen(4567);
    p.send({ seq: 5, ack: 0, flags: RST });
    p.send({ seq: 5, ack: 9, flags: RST | ACK });
    await p.settle();
    expect(p.take()).toEqual([]);
    expect(p.stack.stats().rstIgnored).toBe(2);
  });

  it("RST replies are rate-limited (token bucket)", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { rstBurst: 3, rstRatePerSecond: 2 } });
    for (let i = 0; i < 10; i++) p.send({ seq: i, ack: 0, flags: ACK });
    await p.settle();
    expect(p.take()).toHaveLength(3);
    expect(p.stack.stats().rstRateLimited).toBe(7);
    await vi.advanceTimersByTimeAsync(1000);
    for (let i = 0; i < 10; i++) p.send({ seq: i, ack: 0, flags: ACK });
    await p.settle();
    expect(p.take()).toHaveLength(2);
  });
});

describe("established", () => {
  /** Our next sequence number after the handshake (the cookie ISN + 1), set by `established`. */
  let una = 1;
  /** Our sequence number `n` bytes after the handshake, as the wire shows it. */
  const at = (n: number) => (una + n) >>> 0;
  async function established(p: ReturnType<typeof peer>) {
    p.stack.listen(4567);
    una = ((await p.handshake()) + 1) >>> 0;
    const s = await p.stack.accept();
    await p.settle();
    p.take();
    return s;
  }

  it("an RST whose seq is exactly where the peer is closes the connection (peer-reset)", async () => {
    const p = peer();
    const s = await established(p);
    const closed = new Promise((r) => s.once("close", r));
    // Other RSTs draw a challenge or are ignored: see sequence.test.ts.
    p.send({ seq: 1, ack: 0, flags: RST });
    expect(await closed).toMatchObject({ cause: "peer-reset" });
    expect(p.stack.stats().connections).toBe(0);
    await p.settle();
    expect(p.take()).toEqual([]);
  });

  it("close() sends one RST: seq = current seq, ack 0, flag RST only", async () => {
    const p = peer();
    const s = await established(p);
    s.send(Buffer.alloc(100));
    const info = new Promise((r) => s.once("close", r));
    s.close();
    s.close();
    expect(await info).toMatchObject({ cause: "local" });
    await p.settle();
    const segs = p.take();
    expect(segs.map((x) => [x.flags, x.seq, x.ack])).toEqual([
      [ACK, una, 1],
      [RST, at(100), 0],
    ]);
    expect(s.send(Buffer.from("x"))).toBe(false);
  });

  it("delivers each payload whole, in arrival order, never zero-length ones", async () => {
    const p = peer();
    const s = await established(p);
    const got: string[] = [];
    s.onDatagram((d) => got.push(d.toString()));
    p.send({ seq: 11, ack: una, flags: ACK, payload: Buffer.from("second") });
    p.send({ seq: 1, ack: una, flags: ACK, payload: Buffer.from("first") });
    p.send({ seq: 17, ack: una, flags: ACK });
    p.send({ seq: 17, ack: una, flags: ACK | PSH, payload: Buffer.from("third") });
    p.send({ seq: 1, ack: una, flags: ACK, payload: Buffer.from("first") }); // duplicate: delivered
    await p.settle();
    expect(got).toEqual(["second", "first", "third", "first"]);
  });

  it("acks the highest sequence seen, modulo 2^32", async () => {
    const p = peer();
    const s = await established(p);
    p.send({ seq: 1, ack: una, flags: ACK, payload: Buffer.alloc(10) });
    p.send({ seq: 21, ack: una, flags: ACK, payload: Buffer.alloc(5) });
    p.send({ seq: 11, ack: una, flags: ACK, payload: Buffer.alloc(10) });
    await p.settle();
    s.send(Buffer.from("x"));
    await p.settle();
    // The first data is acknowledged at once (see the next test), the rest rides on ours.
    expect(p.take()).toMatchObject([
      { flags: ACK, ack: 11, payload: Buffer.alloc(0) },
      { flags: ACK, ack: 26 },
    ]);
    // Across the wrap: 0xfffffff0 + 32 wraps to 16, which is "higher" than 26 modulo 2^32?
    // No: it is 2^32 - 10 behind, i.e. older. A segment just past 26 moves the ack.
    p.send({ seq: 0xfffffff0, ack: una, flags: ACK, payload: Buffer.alloc(32) });
    p.send({ seq: 26, ack: una, flags: ACK, payload: Buffer.alloc(4) });
    await p.settle();
    s.send(Buffer.from("y"));
    await p.settle();
    expect(p.take()).toMatchObject([{ ack: 30 }]);
  });

  it("acks the first data at once, then after ackDelayMs, or at once past ackBytes", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { ackDelayMs: 1000, ackBytes: 100 } });
    const s = await established(p);
    // Nothing sent since the handshake: the first data is acknowledged at once, so that
    // conntrack on the path learns our scaled window.
    p.send({ seq: 1, ack: una, flags: ACK, payload: Buffer.alloc(10) });
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: ACK, seq: una, ack: 11, payload: Buffer.alloc(0) }]);
    p.send({ seq: 11, ack: una, flags: ACK, payload: Buffer.alloc(40) });
    await p.settle();
    expect(p.take()).toEqual([]);
    await vi.advanceTimersByTimeAsync(1600);
    expect(p.take()).toMatchObject([{ flags: ACK, seq: una, ack: 51, payload: Buffer.alloc(0) }]);
    await vi.advanceTimersByTimeAsync(3000);
    expect(p.take()).toEqual([]); // nothing left to acknowledge
    p.send({ seq: 51, ack: una, flags: ACK, payload: Buffer.alloc(60) });
    p.send({ seq: 111, ack: una, flags: ACK, payload: Buffer.alloc(60) });
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: ACK, seq: una, ack: 171 }]);
    expect(s.counters.acksSent).toBe(3);
  });

  it("drops (never fragments) a datagram too big for the MTU, counted and logged once", async () => {
    const logs: string[] = [];
    const p = peer({ pair: { mtu: 1000 }, stack: { log: (_l, m) => logs.push(m) } });
    const s = await established(p);
    expect(s.send(Buffer.alloc(960))).toBe(true);
    expect(s.send(Buffer.alloc(961))).toBe(false);
    expect(s.send(Buffer.alloc(5000))).toBe(false);
    expect(s.send(Buffer.alloc(0))).toBe(false);
    await p.settle();
    expect(p.take().map((x) => x.length)).toEqual([1000]);
    expect(s.counters.droppedTooBig).toBe(2);
    expect(p.stack.stats().droppedTooBig).toBe(2);
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/too big/);
    // The sequence number did not advance for the dropped ones.
    s.send(Buffer.from("z"));
    await p.settle();
    expect(p.take()).toMatchObject([{ seq: at(960) }]);
  });

  it("a new SYN seq 0 on an established passive tuple gets a cookie; only its proof replaces the connection", async () => {
    const p = peer();
    const s = await established(p);
    p.send({ seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const [synAck] = p.take();
    expect(synAck).toMatchObject({ flags: SYN | ACK, ack: 1 });
    // A cookie of the other generation: never the old connection's ISN.
    expect(synAck.seq).not.toBe(at(-1));
    expect(s.established).toBe(true);
    // The old connection's own traffic (and a wrong proof) leaves it in place.
    p.send({ seq: 1, ack: una, flags: ACK, payload: Buffer.from("old") });
    p.send({ seq: 1, ack: (synAck.seq + 2) >>> 0, flags: ACK });
    await p.settle();
    expect(s.established).toBe(true);
    expect(s.counters.datagramsReceived).toBe(1);
    const closed = new Promise((r) => s.once("close", r));
    const next = p.stack.accept();
    p.send({ seq: 1, ack: (synAck.seq + 1) >>> 0, flags: ACK, payload: Buffer.from("new") });
    expect(await closed).toMatchObject({ cause: "peer-restarted" });
    const s2 = await next;
    expect(s2).not.toBe(s);
    expect(s2.counters.datagramsReceived).toBe(1);
    expect(p.stack.stats()).toMatchObject({ connections: 1, accepted: 2 });
  });

  it("the receive queue is bounded: drops and counts when nobody reads", async () => {
    const p = peer({ stack: { receiveQueueLimit: 3 } });
    const s = await established(p);
    for (let i = 0; i < 5; i++)
      p.send({ seq: 1 + i, ack: una, flags: ACK, payload: Buffer.from([i]) });
    await p.settle();
    expect(s.counters.droppedQueueFull).toBe(2);
    const it = s[Symbol.asyncIterator]();
    const seen = [];
    for (let i = 0; i < 3; i++) seen.push((await it.next()).value[0]);
    expect(seen).toEqual([0, 1, 2]);
    s.close();
    expect((await it.next()).done).toBe(true);
  });
});
