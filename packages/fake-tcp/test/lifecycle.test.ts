/** Two of our stacks over the in-memory pair: ports, limits, keepalive, idle, scale. */
import { afterEach, describe, expect, it, vi } from "vitest";
import { BoundedQueue, type Socket } from "../src/index.js";
import { TcpFlags } from "../src/wire/index.js";
import { closedAfterEachTest, type rawPeer, summarize } from "./helpers.js";

const { SYN, ACK, RST } = TcpFlags;

// Registered first so that it runs after the closes (vitest runs afterEach hooks last-in first).
afterEach(() => {
  vi.restoreAllMocks();
});
const { peer, pairOf } = closedAfterEachTest();
function closeCause(s: Socket): Promise<string> {
  return new Promise((r) => s.once("close", (i) => r(i.cause)));
}

describe("datagrams between two stacks", () => {
  for (const family of [4, 6] as const) {
    it(`IPv${family}: boundaries kept both ways, loss and reordering passed through`, async () => {
      const { pair, client, server } = pairOf({ pair: { checksumOffload: family === 6 } });
      server.listen(7000);
      const target = family === 4 ? "192.168.201.2:7000" : "[fcc9::2]:7000";
      const [c, s] = await Promise.all([client.connect(target), server.accept()]);
      expect(c.family).toBe(family);
      expect(s.remotePort).toBe(c.localPort);
      const atServer: string[] = [];
      const atClient: string[] = [];
      s.onDatagram((d) => atServer.push(d.toString()));
      c.onDatagram((d) => atClient.push(d.toString()));
      for (const m of ["a", "bb", "ccc"]) c.send(Buffer.from(m));
      for (const m of ["x", "yy"]) s.send(Buffer.from(m));
      await pair.settle();
      expect(atServer).toEqual(["a", "bb", "ccc"]);
      expect(atClient).toEqual(["x", "yy"]);
      // Drop every second packet, then reorder a burst.
      let n = 0;
      pair.aToB.filter = () => n++ % 2 === 0;
      for (const m of ["1", "2", "3", "4"]) c.send(Buffer.from(m));
      await pair.settle();
      pair.aToB.filter = null;
      pair.aToB.holding = true;
      for (const m of ["5", "6", "7"]) c.send(Buffer.from(m));
      pair.aToB.release("reverse");
      await pair.settle();
      expect(atServer.slice(3)).toEqual(["1", "3", "7", "6", "5"]);
      expect(c.counters.datagramsSent).toBe(10);
      expect(s.counters.datagramsReceived).toBe(8);
    });
  }

  it("multi-queue: each flow stays on one queue and replies use the arrival queue", async () => {
    const { pair, client, server } = pairOf({ pair: { queues: 4 } });
    const seenOn: Array<Set<number>> = [new Set(), new Set(), new Set(), new Set()];
    for (let q = 0; q < 4; q++) {
      const inner = pair.b[q];
      const orig = inner.writeGather.bind(inner);
      inner.writeGather = (h, p2, c) => {
        seenOn[q].add(summarize(Buffer.concat([h, p2])).dstPort);
        return orig(h, p2, c);
      };
    }
    server.listen(7000);
    const conns = await Promise.all(
      Array.from({ length: 16 }, () => client.connect("192.168.201.2:7000")),
    );
    const accepted: Socket[] = [];
    for (let i = 0; i < 16; i++) accepted.push(await server.accept());
    const used = new Set(conns.map((c) => c.queueIndex));
    expect(used.size).toBeGreaterThan(1);
    for (const s of accepted) {
      const c = conns.find((x) => x.localPort === s.remotePort)!;
      expect(s.queueIndex).toBe(c.queueIndex);
      expect(seenOn[c.queueIndex].has(c.localPort)).toBe(true);
    }
    const total = seenOn.reduce((n, set) => n + set.size, 0);
    expect(total).toBe(16); // each flow's server replies went out on exactly one queue
    // Every queue that carried a flow's packets one way carried its replies the other way.
    for (let q = 0; q < 4; q++) expect(pair.a[q].refused + pair.b[q].refused).toBe(0);
  });
});

describe("client source ports", () => {
  it("random start in 32768..60999, then counting up, wrapping", async () => {
    const { client, server } = pairOf();
    server.listen(7000);
    vi.spyOn(Math, "random").mockReturnValue(0.999999999);
    const a = await client.connect("192.168.201.2:7000");
    const b = await client.connect("192.168.201.2:7000");
    expect(a.localPort).toBe(60999);
    expect(b.localPort).toBe(32768);
    vi.spyOn(Math, "random").mockReturnValue(0);
    const c = await client.connect("192.168.201.2:7000");
    expect(c.localPort).toBe(32769);
    // Another destination port is another tuple: 32768 is free there.
    server.listen(7001);
    const d = await client.connect("192.168.201.2:7001");
    expect(d.localPort).toBe(32768);
  });

  it("sourcePorts: another range (the host rules' ports outside the host's own), same rule, and its exhaustion", async () => {
    const { pair, client, server } = pairOf({ client: { sourcePorts: { first: 1024, count: 3 } } });
    server.listen(7000);
    vi.spyOn(Math, "random").mockReturnValue(0.999999999);
    const a = await client.connect("192.168.201.2:7000");
    const b = await client.connect("192.168.201.2:7000");
    expect([a.localPort, b.localPort]).toEqual([1026, 1024]);
    pair.aToB.filter = () => false;
    const c = client.connect("192.168.201.2:7000");
    c.catch(() => {});
    await expect(client.connect("192.168.201.2:7000")).rejects.toMatchObject({
      code: "EADDRNOTAVAIL",
      message: expect.stringMatching(/all 3 in use/),
    });
    client.close();
    await Promise.allSettled([c]);
  });

  it("sourcePorts: a range past port 65535 or empty is refused", () => {
    expect(() => pairOf({ client: { sourcePorts: { first: 65000, count: 537 } } })).toThrow(
      RangeError,
    );
    expect(() => pairOf({ client: { sourcePorts: { first: 1024, count: 0 } } })).toThrow(
      RangeError,
    );
    expect(() => pairOf({ client: { sourcePorts: { first: 65000, count: 536 } } })).not.toThrow();
  });

  it("exhaustion gives a clear error", async () => {
    const { pair, client } = pairOf({ client: { maxConnections: 100_000 } });
    pair.aToB.filter = () => false; // nobody answers: sockets stay in SYN-SENT
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < 61000 - 32768; i++) {
      const p = client.connect("192.168.201.2:7000");
      p.catch(() => {});
      pending.push(p);
    }
    await expect(client.connect("192.168.201.2:7000")).rejects.toMatchObject({
      code: "EADDRNOTAVAIL",
      message: expect.stringMatching(/no free source port/),
    });
    client.close();
    await Promise.allSettled(pending);
  });

  it("port shard: only ports p the device steers to the shard ((p + remotePort) mod 2^16 % count), random start, counting up", async () => {
    const count = 3;
    for (let index = 0; index < count; index++) {
      const { client, server } = pairOf({ client: { portShard: { index, count } } });
      server.listen(7000);
      server.listen(7001);
      const ports: number[] = [];
      for (const random of [0, 0.3, 0.999999999]) {
        vi.spyOn(Math, "random").mockReturnValue(random);
        for (let i = 0; i < 4; i++)
          ports.push((await client.connect("192.168.201.2:7000")).localPort);
      }
      // The kernel keeps the steering program's result (p + port) in 16 bits before the modulo.
      for (const p of ports) expect(((p + 7000) % 65536) % count).toBe(index);
      expect(new Set(ports).size).toBe(ports.length);
      // Counting up from the random start: consecutive connections are `count` apart.
      expect(ports[1] - ports[0]).toBe(count);
      expect(ports[0]).toBeLessThan(32768 + count);
      // Another destination port shifts which ports belong to the shard.
      const other = await client.connect("192.168.201.2:7001");
      expect(((other.localPort + 7001) % 65536) % count).toBe(index);
      // The accepting side sees the same tuple, so a device steering by the port sum delivers
      // the replies to this shard.
      const accepted = await server.accept();
      expect(((accepted.remotePort + accepted.localPort) % 65536) % count).toBe(index);
    }
  });

  it("port shard towards WireGuard's port: every port sum wraps past 2^16, the shard still gets its replies", async () => {
    const count = 3;
    for (let index = 0; index < count; index++) {
      const { client, server } = pairOf({ client: { portShard: { index, count } } });
      server.listen(51820);
      for (const random of [0, 0.5, 0.999999999]) {
        vi.spyOn(Math, "random").mockReturnValue(random);
        const p = (await client.connect("192.168.201.2:51820")).localPort;
        // p + 51820 >= 65536 for every ephemeral port: the kernel's queue is (p + 51820 - 65536) % 3.
        expect(p + 51820).toBeGreaterThanOrEqual(65536);
        expect((p + 51820 - 65536) % count).toBe(index);
      }
    }
  });

  it("port shard: exhaustion after the shard's share of the range", async () => {
    const count = 64;
    const { pair, client } = pairOf({
      client: { maxConnections: 100_000, portShard: { index: 5, count } },
    });
    pair.aToB.filter = () => false; // nobody answers: sockets stay in SYN-SENT
    const shardPorts = Array.from({ length: 61000 - 32768 }, (_, i) => 32768 + i).filter(
      (p) => (p + 7000) % count === 5,
    ).length;
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < shardPorts; i++) {
      const p = client.connect("192.168.201.2:7000");
      p.catch(() => {});
      pending.push(p);
    }
    await expect(client.connect("192.168.201.2:7000")).rejects.toMatchObject({
      code: "EADDRNOTAVAIL",
      message: expect.stringMatching(new RegExp(`all ${shardPorts} in use`)),
    });
    client.close();
    await Promise.allSettled(pending);
  });

  it("port shard: nonsense shard options are refused", () => {
    expect(() => pairOf({ client: { portShard: { index: 2, count: 2 } } })).toThrow(RangeError);
    expect(() => pairOf({ client: { portShard: { index: 0, count: 0 } } })).toThrow(RangeError);
    expect(() => pairOf({ client: { portShard: { index: -1, count: 2 } } })).toThrow(RangeError);
  });

  it("needs a local address of the family", async () => {
    const { client } = pairOf({ client: { local6: undefined } });
    await expect(client.connect("[fcc9::2]:1")).rejects.toMatchObject({ code: "EADDRNOTAVAIL" });
    await expect(client.connect("nonsense")).rejects.toThrow(TypeError);
  });
});

describe("table limits", () => {
  it("a SYN flood costs no table entries and never locks out a legitimate client", async () => {
    const p = peer({ stack: { maxConnections: 4, maxConnectionsPerSource: 4 } });
    p.stack.listen(4567);
    const isn = await p.handshake({ srcPort: 1000 });
    const first = await p.stack.accept();
    for (let port = 2000; port < 7000; port++)
      p.send({ srcPort: port, seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const replies = p.take();
    expect(replies).toHaveLength(5000);
    expect(replies.every((x) => x.flags === (SYN | ACK) && x.ack === 1)).toBe(true);
    expect(p.stack.stats()).toMatchObject({ connections: 1, cookiesSent: 5001, refusedFull: 0 });
    // A legitimate client still gets in, and the established one is untouched.
    await p.handshake({ srcPort: 1001 });
    const second = await p.stack.accept();
    expect(second.remotePort).toBe(1001);
    expect(first.established).toBe(true);
    p.send({
      srcPort: 1000,
      seq: 1,
      ack: (isn + 1) >>> 0,
      flags: ACK,
      payload: Buffer.from("still ok"),
    });
    const it = first[Symbol.asyncIterator]();
    expect((await it.next()).value.toString()).toBe("still ok");
  });

  it("max connections: SYNs refused, connect() rejects with ENOBUFS", async () => {
    const { client, server } = pairOf({
      server: { maxConnections: 2, maxConnectionsPerSource: 3 },
    });
    server.listen(7000);
    const a = await client.connect("192.168.201.2:7000");
    await client.connect("192.168.201.2:7000");
    await expect(client.connect("192.168.201.2:7000")).rejects.toMatchObject({
      code: "ECONNREFUSED",
    });
    expect(server.stats().refusedFull).toBe(1);
    expect(server.stats().connections).toBe(2);
    // The client side: its own table holds 2 and its limit is 2.
    const { client: c2, server: s2 } = pairOf({ client: { maxConnections: 2 } });
    s2.listen(7000);
    await c2.connect("192.168.201.2:7000");
    await c2.connect("192.168.201.2:7000");
    await expect(c2.connect("192.168.201.2:7000")).rejects.toMatchObject({ code: "ENOBUFS" });
    a.close();
  });

  it("accept backlog is bounded", async () => {
    const { client, server } = pairOf({ server: { acceptBacklog: 2 } });
    server.listen(7000);
    await client.connect("192.168.201.2:7000");
    await client.connect("192.168.201.2:7000");
    await expect(client.connect("192.168.201.2:7000")).rejects.toMatchObject({
      code: "ECONNREFUSED",
    });
    expect(server.stats().acceptQueue).toBe(2);
  });
});

describe("accept queue", () => {
  it("BoundedQueue.remove takes out a queued item only, keeping order and room", async () => {
    const q = new BoundedQueue<number>(3);
    for (const x of [1, 2, 3]) q.push(x);
    expect(q.push(4)).toBe(false);
    expect(q.shift()).toBe(1);
    expect(q.remove(1)).toBe(false); // already handed out
    expect(q.remove(3)).toBe(true);
    expect(q.remove(3)).toBe(false);
    expect(q.length).toBe(1);
    expect(q.push(5)).toBe(true);
    expect([(await q.next()).value, (await q.next()).value]).toEqual([2, 5]);
  });

  /** SYN, then the cookie-proving ACK and an RST written together: one receive batch. */
  async function establishedThenReset(p: ReturnType<typeof rawPeer>, srcPort: number) {
    p.send({ srcPort, seq: 0, ack: 0, flags: SYN });
    await p.settle();
    const synAck = p.take().find((x) => x.dstPort === srcPort)!;
    const ack = (synAck.seq + 1) >>> 0;
    p.send({ srcPort, seq: 1, ack, flags: ACK, payload: Buffer.from("hello") });
    p.send({ srcPort, seq: 6, ack, flags: RST });
  }

  it("a connection reset before accept() is never handed out (queued: removed)", async () => {
    const p = peer();
    p.stack.listen(4567);
    await establishedThenReset(p, 1000);
    await p.settle();
    expect(p.stack.stats()).toMatchObject({ accepted: 1, acceptQueue: 0, connections: 0 });
    expect(p.stack.stats().closed["peer-reset"]).toBe(1);
    await p.handshake({ srcPort: 1001 });
    const s = await p.stack.accept();
    expect(s.remotePort).toBe(1001);
    expect(s.closed).toBe(false);
  });

  it("a connection reset after being handed to a waiting accept() is skipped", async () => {
    const p = peer();
    p.stack.listen(4567);
    const waiting = p.stack.accept();
    const iterated = p.stack[Symbol.asyncIterator]().next();
    await establishedThenReset(p, 1000);
    await establishedThenReset(p, 1001);
    await p.settle();
    await p.handshake({ srcPort: 1002 });
    await p.handshake({ srcPort: 1003 });
    const got = [await waiting, (await iterated).value as Socket];
    expect(got.map((s) => s.closed)).toEqual([false, false]);
    expect(got.map((s) => s.remotePort).sort()).toEqual([1002, 1003]);
  });
});

describe("keepalive and dead peers", () => {
  it("a peer of ours answers probes, stays up while alive, is detected dead once silent", async () => {
    vi.useFakeTimers();
    const { pair, client, server } = pairOf({
      client: { keepaliveIntervalMs: 2000, deadPeerProbes: 3 },
    });
    server.listen(7000);
    const [c, s] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    expect(c.peerIsOurs && s.peerIsOurs).toBe(true); // negotiated in the handshake
    c.send(Buffer.alloc(100));
    s.send(Buffer.alloc(100));
    await vi.advanceTimersByTimeAsync(30_000);
    expect(c.closed).toBe(false);
    expect(s.closed).toBe(false);
    expect(c.counters.probesSent).toBeGreaterThan(5);
    expect(c.counters.probesAnswered).toBeGreaterThan(5);
    // The server vanishes silently (e.g. lost NAT mapping): nothing comes back any more.
    const cause = closeCause(c);
    pair.bToA.filter = () => false;
    await vi.advanceTimersByTimeAsync(12_000);
    expect(await cause).toBe("dead-peer");
  });

  it("a busy flow to a peer of ours is detected dead when the path dies", async () => {
    vi.useFakeTimers();
    const { pair, client, server } = pairOf({
      client: { keepaliveIntervalMs: 1000, deadPeerProbes: 3 },
      server: { keepaliveIntervalMs: 1000 },
    });
    server.listen(7000);
    const accepted = server.accept().then((s) => {
      s.send(Buffer.from("server handshake packet")); // data that overtakes the probe's answer
      s.onDatagram((d) => s.send(d)); // echo
      return s;
    });
    const [c, s] = await Promise.all([client.connect("192.168.201.2:7000"), accepted]);
    expect(c.peerIsOurs && s.peerIsOurs).toBe(true);
    const cause = closeCause(c);
    // Traffic every 100 ms: never a quiet spell as long as the keepalive interval.
    for (let i = 0; i < 50; i++) {
      c.send(Buffer.alloc(200));
      await vi.advanceTimersByTimeAsync(100);
    }
    expect(c.closed).toBe(false);
    // The path dies mid-flow (a NAT forgets the mapping); the client keeps sending.
    pair.bToA.filter = () => false;
    pair.aToB.filter = () => false;
    const diedAt = Date.now();
    let closedAt = 0;
    c.once("close", () => {
      closedAt = Date.now();
    });
    for (let i = 0; i < 80 && !c.closed; i++) {
      c.send(Buffer.alloc(200));
      await vi.advanceTimersByTimeAsync(100);
    }
    expect(await cause).toBe("dead-peer");
    // keepalive 1 s, then 3 unanswered probes repeated every half interval (+ sweep period).
    expect(closedAt - diedAt).toBeLessThanOrEqual(1_000 + 3 * 500 + 500);
  });

  it("probes are still answered when the last data segment was lost", async () => {
    vi.useFakeTimers();
    const { pair, client, server } = pairOf({
      client: { keepaliveIntervalMs: 2000, deadPeerProbes: 3 },
    });
    server.listen(7000);
    const [c, s] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    expect(c.peerIsOurs && s.peerIsOurs).toBe(true);
    pair.aToB.filter = () => false;
    c.send(Buffer.alloc(100)); // lost
    pair.aToB.filter = null;
    await vi.advanceTimersByTimeAsync(20_000);
    expect(c.counters.probesAnswered).toBeGreaterThan(3);
    expect(c.closed).toBe(false);
  });

  it("a peer not known to be ours gets plain keepalives, never probes, and is never declared dead", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { keepaliveIntervalMs: 1000, deadPeerProbes: 2 } });
    p.stack.listen(4567);
    const isn = await p.handshake({ payload: Buffer.alloc(10) });
    const s = await p.stack.accept();
    s.send(Buffer.alloc(1));
    s.send(Buffer.alloc(1));
    await vi.advanceTimersByTimeAsync(5_000);
    const keepalives = p.take().filter((x) => x.payload.length === 0 && x.flags === ACK);
    expect(keepalives.length).toBeGreaterThan(2);
    // Each carries our next sequence number: nothing old that a phantun peer would answer.
    // (The first went out at establishment, before anything was sent or received.)
    expect(keepalives[0]).toMatchObject({ seq: (isn + 1) >>> 0, ack: 1 });
    for (const k of keepalives.slice(1)) expect(k).toMatchObject({ seq: (isn + 3) >>> 0, ack: 11 });
    // phantun sends a pure ACK (after 128 MiB) acking whatever it last received.
    for (const n of [1, 2, 3]) p.send({ seq: 11, ack: (isn + n) >>> 0, flags: ACK });
    await vi.advanceTimersByTimeAsync(100_000);
    expect(s.closed).toBe(false);
    expect(s.counters.probesSent).toBe(0);
    expect(s.counters.keepalivesSent).toBeGreaterThan(50);
  });

  it("our stack answers a probe (old seq) with a pure ACK echoing it, rate-limited", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { probeAnswerIntervalMs: 1000 } });
    p.stack.listen(4567);
    const una = ((await p.handshake({ payload: Buffer.alloc(10) })) + 1) >>> 0;
    const s = await p.stack.accept();
    s.peerIsOurs = true; // a phantun peer sends no probes: only ours get answers
    await p.settle();
    p.take();
    p.send({ seq: 10, ack: una, flags: ACK }); // probe: seq below 11
    p.send({ seq: 10, ack: una, flags: ACK }); // within the rate limit: not answered
    p.send({ seq: 11, ack: una, flags: ACK }); // a plain pure ACK: never answered
    await p.settle();
    expect(p.take().map((x) => [x.flags, x.seq, x.ack, x.payload.length])).toEqual([
      [ACK, una, 10, 0],
    ]);
    await vi.advanceTimersByTimeAsync(1100);
    p.take(); // the delayed ACK for the 10 bytes received
    p.send({ seq: 9, ack: una, flags: ACK });
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: ACK, seq: una, ack: 9 }]);
  });
});

describe("idle timeout", () => {
  it("closes after 180 s without traffic, not while traffic flows either way", async () => {
    vi.useFakeTimers();
    const { client, server } = pairOf();
    server.listen(7000);
    const [c, s] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    for (let i = 0; i < 4; i++) {
      await vi.advanceTimersByTimeAsync(100_000);
      if (i % 2) c.send(Buffer.from("x"));
      else s.send(Buffer.from("y"));
    }
    expect(c.closed || s.closed).toBe(false);
    const cc = closeCause(c);
    const sc = closeCause(s);
    await vi.advanceTimersByTimeAsync(181_000);
    // Both time out in the same sweep; whichever goes first resets the other.
    const causes = [await cc, await sc];
    expect(causes).toContain("idle-timeout");
    for (const cause of causes) expect(["idle-timeout", "peer-reset"]).toContain(cause);
    expect(client.stats().connections + server.stats().connections).toBe(0);
  });
});

describe("scale", () => {
  it("10,000 concurrent connections: all established, all carry a datagram, close cleanly", async () => {
    const { pair, client, server } = pairOf({
      server: { acceptBacklog: 20_000 },
    });
    server.listen(7000);
    const N = 10_000;
    const clients: Socket[] = [];
    for (let i = 0; i < N; i += 1000) {
      const batch = [];
      for (let j = 0; j < 1000; j++) batch.push(client.connect("192.168.201.2:7000"));
      clients.push(...(await Promise.all(batch)));
    }
    expect(server.stats()).toMatchObject({ connections: N, acceptQueue: N });
    let received = 0;
    for (let i = 0; i < N; i++) (await server.accept()).onDatagram(() => received++);
    for (const c of clients) c.send(Buffer.from("ping"));
    await pair.settle();
    expect(received).toBe(N);
    client.close();
    await pair.settle();
    expect(server.stats().connections).toBe(0);
    expect(server.stats().closed["peer-reset"]).toBe(N);
  });
});

describe("stack lifecycle and robustness", () => {
  it("close() resets every connection, ends accept() and iteration, stops listening", async () => {
    const { pair, client, server } = pairOf();
    server.listen(7000);
    const [c, s] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    const iter = server[Symbol.asyncIterator]();
    const pendingAccept = server.accept();
    const sCause = closeCause(s);
    const cCause = closeCause(c);
    server.close();
    server.close();
    expect(await sCause).toBe("stack-closed");
    expect(await cCause).toBe("peer-reset");
    await expect(pendingAccept).rejects.toThrow(/closed/);
    expect((await iter.next()).done).toBe(true);
    await expect(server.connect("192.168.200.2:7000")).rejects.toThrow(/closed/);
    expect(() => server.listen(1)).toThrow(/closed/);
    await pair.settle();
  });

  it("throwing handlers and close listeners do not break the stack", async () => {
    const logs: string[] = [];
    const { pair, client, server } = pairOf({ server: { log: (_l, m) => logs.push(m) } });
    server.listen(7000);
    const [c, s] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    const [c2, s2] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    s.onDatagram(() => {
      throw new Error("boom");
    });
    s.on("close", () => {
      throw new Error("close boom");
    });
    const got: string[] = [];
    s2.onDatagram((d) => got.push(d.toString()));
    c.send(Buffer.from("a"));
    c2.send(Buffer.from("b"));
    c.close();
    c2.send(Buffer.from("c"));
    await pair.settle();
    expect(got).toEqual(["b", "c"]);
    expect(logs.join("\n")).toMatch(/boom/);
    expect(logs.join("\n")).toMatch(/close boom/);
  });
});
