/**
 * Keyed mode in the stack (issue 11): the Linux-shaped handshake and its tokens, a listener
 * that answers nothing but a key holder's SYN (and no replay of one), the refusal of unkeyed
 * peers both ways with the reason in the log or the error, and connections that no RST
 * closes by itself.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { Stack, type StackOptions } from "../src/index.js";
import { TunnelKey, tokenSlotOf } from "../src/keyed/tunnel-key.js";
import type { Socket } from "../src/stack/socket.js";
import { createMemoryPair, PhantunPeer } from "../src/testing/index.js";
import {
  buildPacket,
  linuxMss,
  linuxSynWindow,
  linuxWindowScale,
  parseIpv4,
  TcpFlags,
} from "../src/wire/index.js";
import { CLIENT4, closedAfterEachTest, SERVER4, summarize } from "./helpers.js";

const { SYN, ACK, RST } = TcpFlags;
const SYN_ACK = SYN | ACK;
const SECRET = randomBytes(32);
const KEY = new TunnelKey(SECRET);

const { closeLater, peer, pairOf } = closedAfterEachTest();

function keyedStacks(o: { client?: Partial<StackOptions>; server?: Partial<StackOptions> } = {}) {
  const t = pairOf({
    client: { key: SECRET, ...o.client },
    server: { key: SECRET, ...o.server },
  });
  t.server.listen(7000);
  return t;
}

async function connected(t: ReturnType<typeof keyedStacks>, target = `${SERVER4}:7000`) {
  const [c, s] = await Promise.all([t.client.connect(target), t.server.accept()]);
  return { c, s };
}

function closeInfo(s: Socket): Promise<{ cause: string; message: string }> {
  return new Promise((r) => s.once("close", r));
}

/** A keyed listener on port 4567 and a hand-driven peer. */
function keyedPeer(stack: Partial<StackOptions> = {}, family: 4 | 6 = 4) {
  const p = peer({ stack: { key: SECRET, ...stack }, family });
  p.stack.listen(4567);
  return p;
}

/** The options of our keyed SYN carrying `tsval` (Linux's layout, MSS 1460, WS 7). */
function synOptions(tsval: number): Buffer {
  const b = Buffer.from([2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7]);
  b.writeUInt32BE(tsval >>> 0, 8);
  return b;
}

/** A valid keyed SYN's fields for nonce `nonce` to port 4567, now. */
function keyedSyn(nonce: number, key = KEY) {
  return {
    seq: nonce,
    ack: 0,
    flags: SYN,
    options: synOptions(key.synToken(4567, tokenSlotOf(Date.now()), nonce)),
  };
}

describe("the Linux-shaped handshake", () => {
  it("helpers: Linux's window for an MSS, and its window scale for a buffer limit", () => {
    expect(linuxSynWindow(1460)).toBe(64240);
    expect(linuxSynWindow(1440)).toBe(64800);
    expect(linuxMss(4, 1500)).toBe(1460);
    expect(linuxMss(6, 1500)).toBe(1440);
    expect(linuxWindowScale(6 * 1024 * 1024)).toBe(7);
    expect(linuxWindowScale(32 * 1024 * 1024)).toBe(10);
    expect(linuxWindowScale(212_992)).toBe(2);
    expect(linuxWindowScale(1)).toBe(0);
    expect(linuxWindowScale(2 ** 40)).toBe(14);
  });

  it("SYN, SYN-ACK and ACK carry Linux's fields and options; nothing is the same twice", async () => {
    const t = keyedStacks({ client: { synWindowScale: 10 }, server: { synWindowScale: 10 } });
    t.pair.aToB.capture = true;
    t.pair.bToA.capture = true;
    const first = await connected(t);
    await connected(t);
    first.c.send(Buffer.from("data"));
    await t.pair.settle();
    const parse = (pkt: Buffer) => ({ ...summarize(pkt), ipId: pkt.readUInt16BE(4) });
    const up = t.pair.aToB.captured.map(parse);
    const down = t.pair.bToA.captured.map(parse);
    const syns = up.filter((x) => x.flags === SYN);
    const synAcks = down.filter((x) => x.flags === SYN_ACK);
    expect(syns).toHaveLength(2);
    expect(synAcks).toHaveLength(2);
    for (const [i, syn] of syns.entries()) {
      expect(syn).toMatchObject({ headerLength: 40, window: 64240, ack: 0, urgent: 0 });
      const o = syn.options.toString("hex");
      // MSS 1460, SACK permitted, timestamps (TSval = token, TSecr 0), NOP, WS 10.
      expect(o).toMatch(/^020405b40402080a[0-9a-f]{8}000000000103030a$/);
      const tsval = syn.options.readUInt32BE(8);
      expect(KEY.tokenSlot(7000, syn.seq, tsval, Date.now())).toBeGreaterThan(0);
      const synAck = synAcks[i];
      expect(synAck).toMatchObject({ headerLength: 32, window: 64240, ipId: 0 });
      expect(synAck.ack).toBe((syn.seq + 1) >>> 0);
      expect(synAck.seq).toBe(KEY.synAckIsn(7000, syn.seq, tsval));
      // MSS 1460, NOP, NOP, SACK permitted, NOP, WS 10: timestamps declined.
      expect(synAck.options.toString("hex")).toBe("020405b4010104020103030a");
    }
    // ISN, TSval, IPv4 ID and source port differ between the two connections (all random).
    expect(syns[0].seq).not.toBe(syns[1].seq);
    expect(syns[0].options.readUInt32BE(8)).not.toBe(syns[1].options.readUInt32BE(8));
    expect(syns[0].ipId).not.toBe(syns[1].ipId);
    expect(synAcks[0].seq).not.toBe(synAcks[1].seq);
    // After the handshake no segment carries options: the ACK, the data.
    for (const x of [...up, ...down].filter((x) => (x.flags & SYN) === 0))
      expect(x.headerLength).toBe(20);
    // The ACK: seq = nonce + 1, Linux's window (64240 scaled by 2^10, rounded up), ID + 1.
    const firstSyn = syns.find((x) => x.srcPort === first.c.localPort)!;
    const ack = up.find((x) => x.flags === ACK && x.srcPort === first.c.localPort)!;
    expect(ack).toMatchObject({ seq: (firstSyn.seq + 1) >>> 0, window: 63 });
    expect(ack.ipId).toBe((firstSyn.ipId + 1) & 0xffff);
  });

  it("over IPv6: MSS 1440, window 64800, and a flow label per connection, the same on all its segments", async () => {
    const t = keyedStacks();
    t.pair.aToB.capture = true;
    t.pair.bToA.capture = true;
    const { c, s } = await connected(t, "[fcc9::2]:7000");
    c.send(Buffer.from("up"));
    s.send(Buffer.from("down"));
    await t.pair.settle();
    const label = (pkt: Buffer) => pkt.readUInt32BE(0) & 0xfffff;
    const up = t.pair.aToB.captured;
    const down = t.pair.bToA.captured;
    const syn = summarize(up[0]);
    expect(syn).toMatchObject({ flags: SYN, window: 64800 });
    expect(syn.options.readUInt16BE(2)).toBe(1440);
    expect(new Set(up.map(label)).size).toBe(1);
    expect(new Set(down.map(label)).size).toBe(1);
    expect(label(up[0])).not.toBe(0);
    expect(label(down[0])).not.toBe(0);
    expect(c.peerIsOurs && s.peerIsOurs).toBe(true);
  });

  it("option ttl sets the TTL / hop limit of every segment, checksums intact", async () => {
    for (const family of [4, 6] as const) {
      const p = peer({ stack: { key: SECRET, ttl: 65 }, family });
      p.stack.listen(4567);
      p.send(keyedSyn(31337));
      await p.settle();
      // rawPeer checks the IPv4 header checksum of everything the stack sends.
      expect(p.raw.map((x) => x[family === 4 ? 8 : 7])).toEqual([65]);
    }
  });

  it("carries datagrams both ways, and its data path is the unkeyed one", async () => {
    const t = keyedStacks();
    const { c, s } = await connected(t);
    const atServer: string[] = [];
    const atClient: string[] = [];
    s.onDatagram((d) => atServer.push(d.toString()));
    c.onDatagram((d) => atClient.push(d.toString()));
    for (let i = 0; i < 50; i++) {
      c.send(Buffer.from(`up ${i}`));
      s.send(Buffer.from(`down ${i}`));
    }
    await t.pair.settle();
    expect(atServer).toHaveLength(50);
    expect(atClient).toHaveLength(50);
    expect(t.client.stats().negotiated).toBe(1);
    expect(t.server.stats()).toMatchObject({ accepted: 1, negotiated: 1, rstSent: 0 });
  });
});

describe("a keyed listener", () => {
  it("answers nothing but a valid keyed SYN: no SYN-ACK, no RST, no state", async () => {
    const p = keyedPeer();
    const other = new TunnelKey(randomBytes(32));
    const probes: Array<[string, Parameters<typeof p.send>[0]]> = [
      [
        "a phantun SYN (seq 0, NOP + WS 14)",
        { seq: 0, ack: 0, flags: SYN, options: Buffer.from([1, 3, 3, 14]) },
      ],
      [
        "a kernel's SYN (random TSval)",
        { seq: 123456, ack: 0, flags: SYN, options: synOptions(0x1234567) },
      ],
      ["a bare SYN", { seq: 77, ack: 0, flags: SYN }],
      [
        "a SYN with junk options",
        { seq: 9, ack: 0, flags: SYN, options: Buffer.from([99, 6, 1, 2, 3, 4, 8, 3, 7]) },
      ],
      ["a SYN with another key's token", keyedSyn(4242, other)],
      ["a SYN+ACK", { ...keyedSyn(4243), flags: SYN_ACK }],
      ["an ACK", { seq: 1, ack: 1, flags: ACK }],
      ["data", { seq: 1000, ack: 5000, flags: ACK, payload: Buffer.from("hello") }],
      ["a FIN", { seq: 1, ack: 1, flags: 1 | ACK }],
      ["an RST", { seq: 1, ack: 0, flags: RST }],
      ["a keyed SYN to a port nobody listens on", { ...keyedSyn(4244), dstPort: 4568 }],
    ];
    for (const [what, segment] of probes) {
      p.send(segment);
      await p.settle();
      expect(p.take(), what).toEqual([]);
    }
    const st = p.stack.stats();
    expect(st).toMatchObject({ rstSent: 0, cookiesSent: 0, connections: 0, synUnauthenticated: 5 });
    expect(st.unknownUnanswered).toBe(probes.length - 1); // the RST is only counted as ignored
    // And a valid one is answered.
    p.send(keyedSyn(4245));
    await p.settle();
    expect(p.take().map((x) => x.flags)).toEqual([SYN_ACK]);
  });

  it("answers a client's SYN again from its tuple, never a replay of it from elsewhere", async () => {
    const p = keyedPeer();
    const syn = keyedSyn(0xabcdef);
    p.send(syn);
    await p.settle();
    const [first] = p.take();
    expect(first).toMatchObject({ flags: SYN_ACK, ack: 0xabcdef + 1 });
    p.send(syn); // the client retransmits
    await p.settle();
    expect(p.take()).toMatchObject([{ flags: SYN_ACK, seq: first.seq }]);
    p.send({ ...syn, srcPort: 40001 }); // the same SYN from another port...
    p.send({ ...syn, src: parseIpv4("10.0.0.9")! }); // ...or another address
    await p.settle();
    expect(p.take()).toEqual([]);
    expect(p.stack.stats()).toMatchObject({ synReplayed: 2, cookiesSent: 2 });
  });

  it("opens the connection on the ACK that proves its answer, from that tuple only", async () => {
    const p = keyedPeer();
    const nonce = 0x7000_0000;
    p.send(keyedSyn(nonce));
    await p.settle();
    const isn = p.take()[0].seq;
    const accepted: Socket[] = [];
    void (async () => {
      for await (const s of p.stack) accepted.push(s);
    })();
    const proof = { seq: nonce + 1, ack: (isn + 1) >>> 0, flags: ACK };
    p.send({ ...proof, srcPort: 40001 }); // another tuple
    p.send({ ...proof, ack: isn }); // a wrong ack
    p.send({ ...proof, seq: nonce }); // a wrong seq
    await p.settle();
    expect(p.take()).toEqual([]);
    expect(accepted).toHaveLength(0);
    expect(p.stack.stats().cookieFailed).toBe(3);
    // The client's ACK was lost: its first datagram completes the handshake and is delivered.
    p.send({ ...proof, payload: Buffer.from("first") });
    await p.settle();
    expect(accepted).toHaveLength(1);
    expect(accepted[0].peerIsOurs).toBe(true);
    const got: string[] = [];
    accepted[0].onDatagram((d) => got.push(d.toString()));
    p.send({ ...proof, seq: nonce + 6, payload: Buffer.from("second") });
    await p.settle();
    expect(got).toEqual(["first", "second"]);
    expect(p.stack.stats().rstSent).toBe(0);
  });

  it("refuses when full without a word (an unkeyed listener sends an RST)", async () => {
    const p = keyedPeer({ maxConnections: 1, maxConnectionsPerSource: 1 });
    p.send(keyedSyn(1000));
    await p.settle();
    const isn = p.take()[0].seq;
    p.send({ seq: 1001, ack: (isn + 1) >>> 0, flags: ACK, payload: Buffer.from("x") });
    await p.settle();
    p.take();
    p.send({ ...keyedSyn(2000), srcPort: 40002 });
    await p.settle();
    expect(p.take()).toEqual([]);
    expect(p.stack.stats().refusedPerSource).toBe(1);
  });

  it("replaces a connection only when a new keyed handshake on its tuple completes", async () => {
    const p = keyedPeer();
    const accepted: Socket[] = [];
    void (async () => {
      for await (const s of p.stack) accepted.push(s);
    })();
    p.send(keyedSyn(500));
    await p.settle();
    const isn1 = p.take()[0].seq;
    p.send({ seq: 501, ack: (isn1 + 1) >>> 0, flags: ACK });
    await p.settle();
    expect(accepted).toHaveLength(1);
    // A SYN without a token on the tuple: ignored, the connection stays.
    p.send({ seq: 0, ack: 0, flags: SYN, options: Buffer.from([1, 3, 3, 14]) });
    await p.settle();
    expect(p.take()).toEqual([]);
    // The client restarted on the same port: a new keyed SYN is answered, its ACK replaces.
    p.send(keyedSyn(9000));
    await p.settle();
    const [answer] = p.take();
    expect(answer).toMatchObject({ flags: SYN_ACK, ack: 9001 });
    expect(accepted[0].closed).toBe(false);
    p.send({ seq: 9001, ack: (answer.seq + 1) >>> 0, flags: ACK });
    await p.settle();
    expect(accepted).toHaveLength(2);
    expect(accepted[0].closeInfo?.cause).toBe("peer-restarted");
    expect(accepted[1].closed).toBe(false);
  });
});

describe("refusing unkeyed peers, with the reason where it can be told", () => {
  it("an unkeyed client of ours: the keyed server stays silent and logs who it refused", async () => {
    vi.useFakeTimers();
    const logs: string[] = [];
    const t = pairOf({ server: { key: SECRET, log: (_l, m) => logs.push(m) } });
    t.server.listen(7000);
    t.pair.bToA.capture = true;
    const failed = t.client.connect(`${SERVER4}:7000`).catch((e: Error & { code: string }) => e);
    await vi.advanceTimersByTimeAsync(4_000);
    const err = (await failed) as Error & { code: string };
    expect(err.code).toBe("ETIMEDOUT");
    expect(t.pair.bToA.captured).toHaveLength(0);
    expect(t.server.stats()).toMatchObject({ unkeyedPeersRefused: 3, synUnauthenticated: 3 });
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/unkeyed fake-tcp client.*192\.168\.200\.2:\d+.*--key-file/);
  });

  it("a keyed client and an unkeyed server of ours: the client ignores its RSTs, then names the cause", async () => {
    vi.useFakeTimers();
    const t = pairOf({ client: { key: SECRET } });
    t.server.listen(7000);
    t.pair.aToB.capture = true;
    const failed = t.client.connect(`${SERVER4}:7000`).catch((e: Error & { code: string }) => e);
    await vi.advanceTimersByTimeAsync(4_000);
    const err = (await failed) as Error & { code: string };
    expect(err.code).toBe("ECONNREFUSED");
    expect(err.message).toMatch(/has no key/);
    expect(t.client.stats()).toMatchObject({ handshakeRstIgnored: 3 });
    expect(t.server.stats()).toMatchObject({ rstSent: 3, accepted: 0 });
    // Three SYNs and nothing else: a Linux client gives up without a word.
    expect(t.pair.aToB.captured.map((x) => summarize(x).flags)).toEqual([SYN, SYN, SYN]);
  });

  it("a keyed client and a phantun server: the same", async () => {
    vi.useFakeTimers();
    const pair = createMemoryPair();
    const client = new Stack({ queues: pair.a, local4: CLIENT4, key: SECRET });
    const server = new PhantunPeer({ queue: pair.b[0], local4: SERVER4 });
    closeLater(() => client.close());
    server.listen(7000);
    const failed = client.connect(`${SERVER4}:7000`).catch((e: Error & { code: string }) => e);
    await vi.advanceTimersByTimeAsync(4_000);
    const err = (await failed) as Error & { code: string };
    expect(err.code).toBe("ECONNREFUSED");
    expect(err.message).toMatch(/has no key/);
  });

  it("another key (or a clock too far off): silence, and a timeout that says what it may be", async () => {
    vi.useFakeTimers();
    const t = keyedStacks({ client: { key: randomBytes(32) } });
    t.pair.bToA.capture = true;
    const failed = t.client.connect(`${SERVER4}:7000`).catch((e: Error & { code: string }) => e);
    await vi.advanceTimersByTimeAsync(4_000);
    const err = (await failed) as Error & { code: string };
    expect(err.code).toBe("ETIMEDOUT");
    expect(err.message).toMatch(/key differs/);
    expect(t.pair.bToA.captured).toHaveLength(0);
    expect(t.server.stats().synUnauthenticated).toBe(3);
  });

  it("a SYN-ACK that is not a key holder's answer is ignored; the real one completes", async () => {
    const t = keyedStacks();
    // Hold the server's SYN-ACK and deliver a forgery first: the right ack, another ISN.
    t.pair.bToA.holding = true;
    const connecting = t.client.connect(`${SERVER4}:7000`);
    await t.pair.settle();
    const real = summarize(t.pair.bToA.held[0].packet);
    t.pair.b[0].write(
      buildPacket({
        src: parseIpv4(SERVER4)!,
        dst: parseIpv4(CLIENT4)!,
        srcPort: 7000,
        dstPort: real.dstPort,
        seq: (real.seq + 1) >>> 0,
        ack: real.ack,
        flags: SYN_ACK,
      }),
    );
    await t.pair.settle();
    expect(t.pair.bToA.held).toHaveLength(2);
    t.pair.bToA.release([1, 0]); // the forgery first
    const c = await connecting;
    expect(t.client.stats()).toMatchObject({ synAckForged: 1, connected: 1 });
    expect(c.peerIsOurs).toBe(true);
  });
});

describe("RST-proof connections", () => {
  /** An RST written into `to`'s side as if from its peer, with this seq. */
  function forgeRst(t: ReturnType<typeof keyedStacks>, s: Socket, seq: number, toClient: boolean) {
    const q = toClient ? t.pair.b[0] : t.pair.a[0];
    q.write(
      buildPacket({
        src: parseIpv4(toClient ? SERVER4 : CLIENT4)!,
        dst: parseIpv4(toClient ? CLIENT4 : SERVER4)!,
        srcPort: s.remotePort,
        dstPort: s.localPort,
        seq: seq >>> 0,
        ack: 0,
        flags: RST,
      }),
    );
  }

  it("exact-seq RSTs both ways close nothing: each starts a fast check, which is answered", async () => {
    vi.useFakeTimers();
    const t = keyedStacks();
    const { c, s } = await connected(t);
    const atServer: number[] = [];
    s.onDatagram(() => atServer.push(1));
    for (let round = 0; round < 20; round++) {
      forgeRst(t, c, c.rcvHigh, true); // exactly where the server is: an unkeyed stack closes
      forgeRst(t, s, s.rcvHigh, false);
      forgeRst(t, c, c.rcvHigh + 2 ** 31, true); // far outside the window
      c.send(Buffer.from("still here"));
      await vi.advanceTimersByTimeAsync(150);
    }
    await vi.advanceTimersByTimeAsync(2_000);
    expect(c.closed || s.closed).toBe(false);
    expect(atServer).toHaveLength(20);
    const cs = t.client.stats();
    const ss = t.server.stats();
    expect(cs.rstChecked).toBe(40);
    expect(ss.rstChecked).toBe(20);
    expect(cs.rstExact).toBe(20);
    expect(ss.rstExact).toBe(20);
    // Every RST was disproved by an answered probe.
    expect(cs.rstForged).toBe(40);
    expect(ss.rstForged).toBe(20);
    expect(cs.closed["peer-reset"] + ss.closed["peer-reset"]).toBe(0);
  });

  it("a real close is noticed within about a second: the RST's check goes unanswered", async () => {
    vi.useFakeTimers();
    const t = keyedStacks();
    const { c } = await connected(t);
    const closed = closeInfo(c);
    const at = Date.now();
    let closedAt = 0;
    c.once("close", () => {
      closedAt = Date.now();
    });
    t.server.close(); // RSTs its connection; then its stack is gone: nobody answers
    await vi.advanceTimersByTimeAsync(3_000);
    expect(await closed).toMatchObject({ cause: "peer-reset" });
    // Three probes verifyIntervalMs (300 ms) apart, then the next tick (100 ms).
    expect(closedAt - at).toBeGreaterThanOrEqual(900);
    expect(closedAt - at).toBeLessThanOrEqual(1_000);
    expect(t.client.stats().rstForged).toBe(0);
  });
});
