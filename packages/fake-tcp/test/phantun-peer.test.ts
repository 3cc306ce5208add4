/**
 * The phantun-shaped test peer (`fake-tcp/testing`): its handshakes against our stack both
 * ways, its established-state rules (the 128 MiB ACK rule and its wrap-around, zero-length
 * segments, no validation) and its RST behaviour, checked packet by packet.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { Stack } from "../src/index.js";
import { createMemoryPair, type PhantunConnection, PhantunPeer } from "../src/testing/index.js";
import { buildPacket, parseIpv4, parseIpv6, TcpFlags } from "../src/wire/index.js";
import { CLIENT4, CLIENT6, SERVER4, SERVER6, summarize } from "./helpers.js";

const { SYN, ACK, RST, PSH } = TcpFlags;
/** NOP + window scale 14: the only options phantun sends, on SYN and SYN-ACK. */
const WS14 = [1, 3, 3, 14];

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
  vi.useRealTimers();
});

/** Our stack on side A, a phantun-shaped peer on side B; packets B sends are captured. */
function stackAndPeer(family: 4 | 6 = 4) {
  const pair = createMemoryPair({ checksumOffload: family === 6 });
  const stack = new Stack({ queues: pair.a, local4: CLIENT4, local6: CLIENT6 });
  const peer = new PhantunPeer({ queue: pair.b[0], local4: SERVER4, local6: SERVER6 });
  pair.bToA.capture = true;
  cleanup.push(() => {
    peer.close();
    stack.close();
  });
  const fromPeer = () => pair.bToA.captured.splice(0).map(summarize);
  return { pair, stack, peer, fromPeer };
}

/**
 * A phantun-shaped peer on side B (address SERVER4) driven by hand from side A (CLIENT4):
 * `send` writes a crafted segment to it, `take` returns what it sent since the last call.
 */
function rawDriven(options: Partial<ConstructorParameters<typeof PhantunPeer>[0]> = {}) {
  const pair = createMemoryPair();
  const peer = new PhantunPeer({ queue: pair.b[0], local4: SERVER4, ...options });
  const got: ReturnType<typeof summarize>[] = [];
  pair.a[0].onReceive((batch) => {
    for (let i = 0; i < batch.count; i++) {
      const at = batch.offsets[2 * i];
      got.push(summarize(batch.buffer.subarray(at, at + batch.offsets[2 * i + 1])));
    }
  });
  cleanup.push(() => peer.close());
  const send = (s: {
    seq: number;
    ack: number;
    flags: number;
    payload?: Uint8Array;
    srcPort?: number;
    dstPort?: number;
  }) =>
    pair.a[0].write(
      buildPacket({
        src: parseIpv4(CLIENT4)!,
        dst: parseIpv4(SERVER4)!,
        srcPort: s.srcPort ?? 40000,
        dstPort: s.dstPort ?? 4567,
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        payload: s.payload,
      }),
    );
  const take = async () => {
    await pair.settle();
    return got.splice(0);
  };
  /** Completes a passive handshake on port 4567 from port 40000; resolves with the connection. */
  const established = async (): Promise<PhantunConnection> => {
    peer.listen(4567);
    send({ seq: 0, ack: 0, flags: SYN });
    send({ seq: 1, ack: 1, flags: ACK });
    const conn = await peer.accept();
    await take();
    return conn;
  };
  return { pair, peer, send, take, established };
}

const brief = (p: ReturnType<typeof summarize>) => ({
  flags: p.flags,
  seq: p.seq,
  ack: p.ack,
  len: p.payload.length,
});

describe("phantun-shaped peer against our stack", () => {
  for (const family of [4, 6] as const) {
    it(`IPv${family}: our client connects to its server; datagrams both ways`, async () => {
      const { pair, stack, peer, fromPeer } = stackAndPeer(family);
      peer.listen(4567);
      const target = family === 4 ? `${SERVER4}:4567` : `[${SERVER6}]:4567`;
      const [ours, theirs] = await Promise.all([stack.connect(target), peer.accept()]);
      const synAck = fromPeer()[0];
      expect(brief(synAck)).toEqual({ flags: SYN | ACK, seq: 0, ack: 1, len: 0 });
      expect([...synAck.options]).toEqual(WS14);
      expect(synAck.window).toBe(0xffff);
      expect(theirs.remotePort).toBe(ours.localPort);
      expect(theirs.remoteAddress).toBe(family === 4 ? CLIENT4 : CLIENT6);
      const atPeer: string[] = [];
      const atStack: string[] = [];
      theirs.onDatagram((d) => atPeer.push(d.toString()));
      ours.onDatagram((d) => atStack.push(d.toString()));
      for (const m of ["a", "bb", "ccc"]) ours.send(Buffer.from(m));
      await pair.settle();
      for (const m of ["x", "yy"]) theirs.send(Buffer.from(m));
      await pair.settle();
      expect(atPeer).toEqual(["a", "bb", "ccc"]);
      expect(atStack).toEqual(["x", "yy"]);
      // Its data: flag ACK only, seq from 1 by payload length, ack = seq + len of the last received.
      expect(fromPeer().map(brief)).toEqual([
        { flags: ACK, seq: 1, ack: 7, len: 1 },
        { flags: ACK, seq: 2, ack: 7, len: 2 },
      ]);
    });

    it(`IPv${family}: its client connects to our server; datagrams both ways`, async () => {
      const pair = createMemoryPair({ checksumOffload: family === 6 });
      const stack = new Stack({ queues: pair.a, local4: SERVER4, local6: SERVER6 });
      const peer = new PhantunPeer({ queue: pair.b[0], local4: CLIENT4, local6: CLIENT6 });
      cleanup.push(() => {
        peer.close();
        stack.close();
      });
      pair.bToA.capture = true;
      pair.aToB.capture = true;
      stack.listen(4567);
      const target = family === 4 ? `${SERVER4}:4567` : `[${SERVER6}]:4567`;
      const [theirs, ours] = await Promise.all([peer.connect(target), stack.accept()]);
      const [syn, ackSeg] = pair.bToA.captured.splice(0).map(summarize);
      expect(brief(syn)).toEqual({ flags: SYN, seq: 0, ack: 0, len: 0 });
      expect([...syn.options]).toEqual(WS14);
      expect(syn.headerLength).toBe(24);
      expect(syn.srcPort).toBeGreaterThanOrEqual(32768);
      expect(syn.srcPort).toBeLessThanOrEqual(60999);
      // The server's ISN is taken as given: the ACK acknowledges whatever it was.
      const synAck = summarize(pair.aToB.captured[0]);
      expect(brief(ackSeg)).toEqual({ flags: ACK, seq: 1, ack: (synAck.seq + 1) >>> 0, len: 0 });
      expect(ackSeg.headerLength).toBe(20);
      expect(ours.remotePort).toBe(theirs.localPort);
      const atPeer: string[] = [];
      const atStack: string[] = [];
      theirs.onDatagram((d) => atPeer.push(d.toString()));
      ours.onDatagram((d) => atStack.push(d.toString()));
      theirs.send(Buffer.from("up"));
      ours.send(Buffer.from("down"));
      await pair.settle();
      expect(atStack).toEqual(["up"]);
      expect(atPeer).toEqual(["down"]);
      expect(peer.counters()).toMatchObject({
        connected: 1,
        datagramsSent: 1,
        datagramsReceived: 1,
      });
    });
  }
});

describe("phantun-shaped peer: established rules", () => {
  it("a probe with seq = next - 1 draws exactly one pure ACK (wrap-around); a second draws none", async () => {
    const { send, take, established } = rawDriven();
    const conn = await established();
    // Right after the handshake its last ack sent (in the SYN-ACK) is 1: a probe at seq 0
    // steps behind it, and the step wraps modulo 2^32 past 128 MiB.
    send({ seq: 0, ack: 1, flags: ACK });
    expect((await take()).map(brief)).toEqual([{ flags: ACK, seq: 1, ack: 0, len: 0 }]);
    send({ seq: 0, ack: 1, flags: ACK }); // the same probe again: no step back any more
    expect(await take()).toEqual([]);
    const got: Buffer[] = [];
    conn.onDatagram((d) => got.push(d));
    send({ seq: 1, ack: 1, flags: ACK, payload: Buffer.alloc(10, 7) });
    expect(await take()).toEqual([]); // data is never acknowledged below 128 MiB
    expect(got).toEqual([Buffer.alloc(10, 7)]);
    // Anything it sends carries its ack (11), which becomes the reference: the probe at
    // next - 1 = 10 is answered once, its repetition not.
    conn.send(Buffer.from("hi"));
    send({ seq: 10, ack: 3, flags: ACK });
    send({ seq: 10, ack: 3, flags: ACK });
    expect((await take()).map(brief)).toEqual([
      { flags: ACK, seq: 1, ack: 11, len: 2 },
      { flags: ACK, seq: 3, ack: 10, len: 0 },
    ]);
    expect(conn.counters).toMatchObject({
      pureAcksSent: 2,
      wrapAcksSent: 2,
      emptySegments: 4,
      datagramsReceived: 1,
    });
    expect(got.length).toBe(1); // zero-length segments are never delivered
  });

  it("acks seq + length of the last segment (backwards on reordering), validates nothing", async () => {
    const { send, take, established, peer } = rawDriven();
    const conn = await established();
    const got: string[] = [];
    conn.onDatagram((d) => got.push(d.toString()));
    send({ seq: 6, ack: 1, flags: ACK, payload: Buffer.from("later") }); // ack -> 11
    send({ seq: 1, ack: 1, flags: ACK, payload: Buffer.from("first") }); // ack -> 6, no answer
    // A wild seq and ack are delivered all the same; the forward jump past 128 MiB draws an ACK.
    send({ seq: 0x40000000, ack: 0xdeadbeef, flags: ACK | PSH, payload: Buffer.from("wild") });
    const out = (await take()).map(brief);
    expect(out).toEqual([{ flags: ACK, seq: 1, ack: 0x40000004, len: 0 }]);
    expect(got).toEqual(["later", "first", "wild"]);
    expect(conn.counters).toMatchObject({ pureAcksSent: 1, wrapAcksSent: 0 });
    send({ seq: 1, ack: 1, flags: ACK, payload: Buffer.from("old") }); // far behind: wraps
    expect((await take()).map(brief)).toEqual([{ flags: ACK, seq: 1, ack: 4, len: 0 }]);
    expect(peer.counters()).toMatchObject({ pureAcksSent: 2, wrapAcksSent: 1 });
  });

  it("closes after the idle timeout, and not while packets flow", async () => {
    vi.useFakeTimers();
    const { send, take, established } = rawDriven({ idleTimeoutMs: 5_000 });
    const conn = await established();
    for (let i = 0; i < 8; i++) {
      await vi.advanceTimersByTimeAsync(1_000);
      send({ seq: 1, ack: 1, flags: ACK }); // even a zero-length segment is traffic
    }
    expect(conn.closed).toBe(false);
    await vi.advanceTimersByTimeAsync(6_100);
    expect(conn.closeReason).toBe("idle");
    expect((await take()).map(brief)).toEqual([{ flags: RST, seq: 1, ack: 0, len: 0 }]);
  });
});

describe("phantun-shaped peer: handshakes", () => {
  it("server: SYN-ACK resent 3 times 1 s apart, then RST; completes only on exactly ACK with ack 1", async () => {
    vi.useFakeTimers();
    const { peer, send, take } = rawDriven();
    peer.listen(4567);
    send({ seq: 0, ack: 0, flags: SYN });
    expect((await take()).map(brief)).toEqual([{ flags: SYN | ACK, seq: 0, ack: 1, len: 0 }]);
    await vi.advanceTimersByTimeAsync(1_000);
    await vi.advanceTimersByTimeAsync(1_000);
    expect((await take()).map(brief)).toEqual([
      { flags: SYN | ACK, seq: 0, ack: 1, len: 0 },
      { flags: SYN | ACK, seq: 0, ack: 1, len: 0 },
    ]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect((await take()).map(brief)).toEqual([{ flags: RST, seq: 0, ack: 0, len: 0 }]);
    expect(peer.counters().handshakesFailed).toBe(1);

    // A second attempt: near misses are ignored; the completing segment's payload is consumed.
    send({ seq: 0, ack: 0, flags: SYN, srcPort: 40001 });
    send({ seq: 1, ack: 1, flags: ACK | PSH, srcPort: 40001 });
    send({ seq: 1, ack: 2, flags: ACK, srcPort: 40001 });
    await take();
    expect(peer.connections()[0].state).toBe("syn-received");
    send({ seq: 1, ack: 1, flags: ACK, srcPort: 40001, payload: Buffer.from("eaten") });
    const conn = await peer.accept();
    expect(conn.remotePort).toBe(40001);
    const got: Buffer[] = [];
    conn.onDatagram((d) => got.push(d));
    await take();
    expect(got).toEqual([]);
    expect(conn.ack).toBe(1);
  });

  it("client: accepts only exactly SYN+ACK with ack 1, takes the server's seq as given", async () => {
    // Side A (CLIENT4) plays the server here.
    const { peer, send, take } = rawDriven();
    const connecting = peer.connect(`${CLIENT4}:4567`);
    const [syn] = await take();
    expect(brief(syn)).toEqual({ flags: SYN, seq: 0, ack: 0, len: 0 });
    const port = { srcPort: 4567, dstPort: syn.srcPort };
    send({ ...port, seq: 777, ack: 1, flags: SYN | ACK | PSH });
    send({ ...port, seq: 777, ack: 2, flags: SYN | ACK });
    send({ ...port, seq: 777, ack: 1, flags: ACK });
    expect(await take()).toEqual([]);
    send({ ...port, seq: 777, ack: 1, flags: SYN | ACK });
    const conn = await connecting;
    expect((await take()).map(brief)).toEqual([{ flags: ACK, seq: 1, ack: 778, len: 0 }]);
    conn.send(Buffer.from("abc"));
    expect((await take()).map(brief)).toEqual([{ flags: ACK, seq: 1, ack: 778, len: 3 }]);
  });

  it("client: 3 SYNs 1 s apart, then RST and ETIMEDOUT; an RST refuses at once (and is answered)", async () => {
    vi.useFakeTimers();
    const { peer, send, take } = rawDriven();
    const failed = peer.connect(`${CLIENT4}:4567`).catch((e: { code: string }) => e.code);
    await vi.advanceTimersByTimeAsync(2_500);
    expect((await take()).map((p) => p.flags)).toEqual([SYN, SYN, SYN]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await failed).toBe("ETIMEDOUT");
    expect((await take()).map(brief)).toEqual([{ flags: RST, seq: 0, ack: 0, len: 0 }]);

    const refused = peer.connect(`${CLIENT4}:4567`).catch((e: { code: string }) => e.code);
    const [syn] = await take();
    send({ srcPort: 4567, dstPort: syn.srcPort, seq: 0, ack: 1, flags: RST | ACK });
    expect(await refused).toBe("ECONNREFUSED");
    expect((await take()).map(brief)).toEqual([{ flags: RST, seq: 0, ack: 0, len: 0 }]);
    expect(peer.counters()).toMatchObject({ handshakesFailed: 2, rstReceived: 1 });
  });
});

describe("phantun-shaped peer: RSTs", () => {
  it("any RST closes an established connection; the peer resets back, as phantun's socket does", async () => {
    const { send, take, established, peer } = rawDriven();
    const conn = await established();
    conn.send(Buffer.from("12345"));
    await take();
    const reason = new Promise((r) => conn.once("close", r));
    send({ seq: 99_999, ack: 0, flags: RST }); // not validated either
    expect(await reason).toBe("reset");
    expect((await take()).map(brief)).toEqual([{ flags: RST, seq: 6, ack: 0, len: 0 }]);
    expect(peer.counters()).toMatchObject({ rstReceived: 1, closed: { reset: 1 } });
    // The tuple is gone: what follows is an unknown tuple's.
    send({ seq: 1, ack: 6, flags: ACK, payload: Buffer.from("late") });
    expect((await take()).map(brief)).toEqual([{ flags: RST | ACK, seq: 6, ack: 5, len: 0 }]);
  });

  it("close() sends one RST: seq = current seq, ack 0, flag RST only", async () => {
    const { send, take, established } = rawDriven();
    const conn = await established();
    send({ seq: 1, ack: 1, flags: ACK, payload: Buffer.from("abc") });
    conn.send(Buffer.from("xy"));
    await take();
    conn.close();
    conn.close();
    const out = await take();
    expect(out.map(brief)).toEqual([{ flags: RST, seq: 3, ack: 0, len: 0 }]);
    expect(out[0].headerLength).toBe(20);
  });

  it("unknown tuples: phantun's listener rules", async () => {
    const { peer, send, take } = rawDriven();
    peer.listen(4567);
    send({ seq: 5, ack: 0, flags: SYN }); // SYN, seq != 0
    send({ seq: 5, ack: 0, flags: SYN, payload: Buffer.alloc(3) });
    send({ seq: 100, ack: 200, flags: ACK, payload: Buffer.alloc(4) }); // anything else
    send({ seq: 0, ack: 0, flags: SYN, dstPort: 4568 }); // SYN to a port nobody listens on
    send({ seq: 7, ack: 0, flags: SYN | ACK });
    send({ seq: 1, ack: 1, flags: RST }); // ignored
    send({ seq: 1, ack: 1, flags: RST | ACK }); // ignored
    expect((await take()).map(brief)).toEqual([
      { flags: RST | ACK, seq: 0, ack: 6, len: 0 },
      { flags: RST | ACK, seq: 0, ack: 9, len: 0 },
      { flags: RST | ACK, seq: 200, ack: 104, len: 0 },
      { flags: RST | ACK, seq: 0, ack: 0, len: 0 },
      { flags: RST | ACK, seq: 0, ack: 7, len: 0 },
    ]);
    expect(peer.counters()).toMatchObject({ rstRepliesSent: 5, rstIgnored: 2 });
    expect(peer.connections()).toEqual([]);
  });

  it("IPv6 unknown tuples get the same answers, from the address they were sent to", async () => {
    const pair = createMemoryPair();
    const peer = new PhantunPeer({ queue: pair.b[0] });
    cleanup.push(() => peer.close());
    pair.bToA.capture = true;
    pair.a[0].write(
      buildPacket({
        src: parseIpv6(CLIENT6)!,
        dst: parseIpv6(SERVER6)!,
        srcPort: 40000,
        dstPort: 4567,
        seq: 10,
        ack: 20,
        flags: ACK,
        payload: Buffer.alloc(2),
      }),
    );
    await pair.settle();
    const [rst] = pair.bToA.captured.map(summarize);
    expect(rst).toMatchObject({ family: 6, srcPort: 4567, dstPort: 40000 });
    expect(brief(rst)).toEqual({ flags: RST | ACK, seq: 20, ack: 12, len: 0 });
  });
});
