/**
 * Sequence validation on the wire: what a phantun peer really sends is always believed (ISN 0,
 * acks that lag and move backwards, RSTs as phantun builds them, no probe answers), what a
 * blind attacker sends is not, and a stream that jumped after a loss burst is taken back.
 */
import { describe, expect, it, vi } from "vitest";
import type { Socket } from "../src/index.js";
import { buildPacket, parseIpv4, TcpFlags } from "../src/wire/index.js";
import { CLIENT4, closedAfterEachTest, type rawPeer, SERVER4, xorshift32 } from "./helpers.js";
import { deliverCoalesced } from "./receive-fuzzing.js";

const { SYN, ACK, RST } = TcpFlags;

const { closeLater, peer, pairOf } = closedAfterEachTest();

/** A phantun-like client (ISN 0, no option of ours) connected to our stack; settled. */
async function phantunClient(opts: Parameters<typeof rawPeer>[0] = {}) {
  const p = peer(opts);
  p.stack.listen(4567);
  p.send({ seq: 0, ack: 0, flags: SYN });
  await p.settle();
  const iss = p.take()[0].seq; // our ISN, whatever it is
  p.send({ seq: 1, ack: u32(iss + 1), flags: ACK });
  const s = await p.stack.accept();
  expect(s.peerIsOurs).toBe(false);
  const got: string[] = [];
  s.onDatagram((d) => got.push(d.toString()));
  await p.settle();
  p.take();
  /** Our next sequence number as the peer sees it. */
  const ours = () => u32(iss + 1 + s.counters.bytesSent);
  return { ...p, s, got, iss, ours };
}

/** A sequence number as it goes on the wire. */
function u32(x: number): number {
  return x >>> 0;
}

function closeInfo(s: Socket): Promise<{ cause: string }> {
  return new Promise((r) => s.once("close", r));
}

describe("a phantun peer's real segments are always believed", () => {
  it("data from seq 1 with acks that lag and move backwards (reordering) is all delivered", async () => {
    const p = await phantunClient();
    for (let i = 0; i < 5; i++) p.s.send(Buffer.alloc(100, i));
    await p.settle();
    p.take();
    const base = p.iss + 1;
    // phantun's ack is seq + length of the last segment it received, in arrival order.
    const acks = [0, 200, 100, 500, 300, 400].map((d) => u32(base + d));
    let seq = 1;
    acks.forEach((ack, i) => {
      p.send({ seq, ack, flags: ACK, payload: Buffer.from(`d${i}`) });
      seq += 2;
    });
    await p.settle();
    expect(p.got).toEqual(["d0", "d1", "d2", "d3", "d4", "d5"]);
    expect(p.stack.stats()).toMatchObject({ outOfWindow: 0, badAck: 0 });
  });

  it("after a quiet spell its ack may trail ours by datagrams it lost: still believed", async () => {
    vi.useFakeTimers();
    const p = await phantunClient();
    p.s.send(Buffer.alloc(1000));
    p.s.send(Buffer.alloc(1000)); // lost on the way: phantun's ack stays 1000 behind
    await vi.advanceTimersByTimeAsync(10_000);
    p.send({ seq: 1, ack: u32(p.ours() - 1000), flags: ACK, payload: Buffer.from("late") });
    p.send({ seq: 5, ack: p.ours(), flags: ACK, payload: Buffer.from("now") });
    await p.settle();
    expect(p.got).toEqual(["late", "now"]);
  });

  it("reordered and duplicate data behind the highest seq is delivered", async () => {
    const p = await phantunClient();
    const a = u32(p.iss + 1);
    p.send({ seq: 1 + 300_000, ack: a, flags: ACK, payload: Buffer.from("ahead") });
    p.send({ seq: 1, ack: a, flags: ACK, payload: Buffer.from("behind") });
    p.send({ seq: 1, ack: a, flags: ACK, payload: Buffer.from("behind") });
    await p.settle();
    expect(p.got).toEqual(["ahead", "behind", "behind"]);
  });

  it("a server ISN other than 0 (our client, phantun-like server with ISN 777)", async () => {
    const p = peer();
    const conn = p.stack.connect("192.168.200.2:4567");
    await p.settle();
    const port = p.take()[0].srcPort;
    p.send({ srcPort: 4567, dstPort: port, seq: 777, ack: 1, flags: SYN | ACK });
    const s = await conn;
    const got: string[] = [];
    s.onDatagram((d) => got.push(d.toString()));
    p.send({
      srcPort: 4567,
      dstPort: port,
      seq: 778,
      ack: 1,
      flags: ACK,
      payload: Buffer.from("x"),
    });
    p.send({
      srcPort: 4567,
      dstPort: port,
      seq: 778 + 0x6000_0000, // 1.5 GiB ahead: outside any window
      ack: 1,
      flags: ACK,
      payload: Buffer.from("no"),
    });
    await p.settle();
    expect(got).toEqual(["x"]);
    // Its ack is fresh, so it may be the start of a resync chain: held, not delivered.
    expect(p.stack.stats().resyncChained).toBe(1);
  });
});

describe("segments outside the windows", () => {
  it("data whose ack was never sent, or is past what we sent, is dropped and counted", async () => {
    const p = await phantunClient();
    p.s.send(Buffer.alloc(100));
    await p.settle();
    p.take();
    p.send({ seq: 1, ack: u32(p.ours() + 1), flags: ACK, payload: Buffer.from("future ack") });
    p.send({ seq: 1, ack: u32(p.ours() - 70_000), flags: ACK, payload: Buffer.from("never sent") });
    p.send({ seq: 1, ack: p.ours(), flags: 0, payload: Buffer.from("no ACK flag") });
    p.send({ seq: 1, ack: p.ours(), flags: ACK, payload: Buffer.from("good") });
    await p.settle();
    expect(p.got).toEqual(["good"]);
    expect(p.stack.stats().badAck).toBe(3);
    // One challenge ACK (rate-limited per connection) tells the peer where we are.
    expect(p.take().map((x) => [x.flags, x.seq, x.ack, x.payload.length])).toEqual([
      [ACK, p.ours(), 1, 0],
    ]);
  });

  it("pure ACKs outside the windows move nothing: our ack stays at the real peer's seq", async () => {
    const p = await phantunClient();
    p.send({ seq: 1, ack: p.ours(), flags: ACK, payload: Buffer.alloc(10) });
    p.send({ seq: 0x7000_0000, ack: p.ours(), flags: ACK }); // seq far ahead
    p.send({ seq: 100, ack: u32(p.ours() + 5), flags: ACK }); // seq fine, ack past ours
    await p.settle();
    p.take();
    p.s.send(Buffer.from("x"));
    await p.settle();
    expect(p.take()).toMatchObject([{ ack: 11 }]);
    expect(p.stack.stats()).toMatchObject({ outOfWindow: 1, badAck: 1 });
    // A believed pure ACK does move it: its seq says how far the peer has sent.
    p.send({ seq: 50, ack: p.ours(), flags: ACK });
    await p.settle();
    p.s.send(Buffer.from("y"));
    await p.settle();
    expect(p.take()).toMatchObject([{ ack: 50 }]);
  });

  it("a blind attacker: 20,000 random data segments and RSTs deliver and close nothing", async () => {
    // Our client (ISN 0) and a phantun-like server with ISN 777: every sequence number in
    // play is fixed, so the seeded attack below is the same on every run.
    vi.useFakeTimers(); // one instant: the per-connection challenge limit lets one through
    const p = peer();
    const conn = p.stack.connect("192.168.200.2:4567");
    await p.settle();
    const port = p.take()[0].srcPort;
    const from = { srcPort: 4567, dstPort: port };
    p.send({ ...from, seq: 777, ack: 1, flags: SYN | ACK });
    const s = await conn;
    const got: string[] = [];
    s.onDatagram((d) => got.push(d.toString()));
    s.send(Buffer.alloc(1000)); // something sent: the ack window is not trivially small
    const next = xorshift32(2024);
    for (let i = 0; i < 20_000; i++)
      p.send({ ...from, seq: next(), ack: next(), flags: ACK, payload: Buffer.from("evil") });
    for (let i = 0; i < 20_000; i++)
      p.send({ ...from, seq: next(), ack: next(), flags: RST | ACK });
    await p.settle();
    expect(got).toEqual([]);
    expect(s.closed).toBe(false);
    const st = p.stack.stats();
    expect(st.outOfWindow + st.badAck + st.resyncChained).toBe(20_000);
    expect(st.resynced).toBe(0);
    expect(st.rstOutOfWindow + st.rstChallenged).toBe(20_000);
    // Challenges went out at most once per connection per 250 ms, however many were asked.
    expect(st.challengeAcks).toBe(1);
    // The real peer's data still flows.
    p.send({ ...from, seq: 778, ack: 1001, flags: ACK, payload: Buffer.from("real") });
    await p.settle();
    expect(got).toEqual(["real"]);
  });
});

describe("resync after a loss burst", () => {
  it("while we send nothing the seq window is 1 GiB: a 125 MB jump (1 s at 1 Gbit/s) is taken as it comes", async () => {
    const p = await phantunClient();
    p.send({ seq: 1, ack: p.ours(), flags: ACK, payload: Buffer.from("before") });
    p.send({ seq: 1 + 6 + 125_000_000, ack: p.ours(), flags: ACK, payload: Buffer.from("after") });
    await p.settle();
    expect(p.got).toEqual(["before", "after"]);
    expect(p.stack.stats()).toMatchObject({ resynced: 0, resyncChained: 0, outOfWindow: 0 });
  });

  it("while we send 28 MB the window shrinks: a 125 MB jump is taken back after three consecutive segments", async () => {
    const p = await phantunClient();
    p.send({ seq: 1, ack: p.ours(), flags: ACK, payload: Buffer.from("before") });
    await p.settle();
    // 20,000 x 1400 bytes out: the ack window spans 28 MB, so the seq window is 8 MiB.
    p.pair.aToB.filter = () => false;
    for (let i = 0; i < 20_000; i++) p.s.send(Buffer.alloc(1400));
    await p.settle();
    p.pair.aToB.filter = null;
    p.take();
    const at = 1 + 6 + 125_000_000;
    for (let i = 0; i < 5; i++)
      p.send({
        seq: at + 1000 * i,
        ack: p.ours(),
        flags: ACK,
        payload: Buffer.alloc(1000, 65 + i),
      });
    await p.settle();
    // The first two are the chain's first links; the third completes it.
    expect(p.got).toEqual(["before", "C".repeat(1000), "D".repeat(1000), "E".repeat(1000)]);
    expect(p.stack.stats()).toMatchObject({ resynced: 1, resyncChained: 2, outOfWindow: 0 });
    p.take();
    p.s.send(Buffer.from("x"));
    await p.settle();
    expect(p.take()).toMatchObject([{ ack: u32(at + 5000) }]);
  });

  it("a jump past any window (1.5 GiB) is taken back after three consecutive segments", async () => {
    const p = await phantunClient();
    const at = 1 + 0x6000_0000;
    for (let i = 0; i < 4; i++)
      p.send({ seq: at + 10 * i, ack: p.ours(), flags: ACK, payload: Buffer.alloc(10, 65 + i) });
    await p.settle();
    expect(p.got).toEqual(["C".repeat(10), "D".repeat(10)]);
    expect(p.stack.stats()).toMatchObject({ resynced: 1, resyncChained: 2 });
  });

  it("after a two-way outage its acks are stale: our challenge ACK brings them up to date", async () => {
    vi.useFakeTimers();
    const p = await phantunClient();
    for (let i = 0; i < 3; i++) p.s.send(Buffer.alloc(1000));
    await vi.advanceTimersByTimeAsync(3_000); // the ack window moves past those sends
    p.s.send(Buffer.alloc(1000)); // lost: the peer's ack stays where it was
    await vi.advanceTimersByTimeAsync(3_000);
    p.take();
    const stale = u32(p.ours() - 1000 - 70_000); // older than anything we accept
    const at = 1 + 0x6000_0000; // 1.5 GiB: outside any window
    p.send({ seq: at, ack: stale, flags: ACK, payload: Buffer.alloc(100) });
    await p.settle();
    const [challenge] = p.take();
    expect(challenge).toMatchObject({
      flags: ACK,
      seq: p.ours(),
      ack: 1,
      payload: Buffer.alloc(0),
    });
    // phantun takes our seq as its new ack: its next segments carry a fresh ack.
    for (let i = 1; i <= 3; i++)
      p.send({
        seq: at + 100 * i,
        ack: challenge.seq,
        flags: ACK,
        payload: Buffer.alloc(100, 48 + i),
      });
    await p.settle();
    expect(p.got).toEqual(["3".repeat(100)]);
    expect(p.stack.stats()).toMatchObject({ resynced: 1, outOfWindow: 1 });
  });

  it("a coalesced packet after a jump: the segments past the chain's third are delivered", async () => {
    const p = await phantunClient({ pair: { checksumOffload: true } });
    const payload = Buffer.concat([0, 1, 2, 3].map((i) => Buffer.alloc(600, 48 + i)));
    const packet = buildPacket({
      src: parseIpv4(CLIENT4)!,
      dst: parseIpv4(SERVER4)!,
      srcPort: 40000,
      dstPort: 4567,
      seq: 1 + 0x6000_0000,
      ack: p.ours(),
      flags: ACK,
      payload,
    });
    deliverCoalesced(p.pair.a[0], packet, 600);
    expect(p.got).toEqual(["2".repeat(600), "3".repeat(600)]);
    expect(p.stack.stats()).toMatchObject({ resynced: 1 });
  });
});

describe("RSTs", () => {
  it("phantun's closing RST (seq = its next seq, ack 0, RST only) closes", async () => {
    const p = await phantunClient();
    p.send({ seq: 1, ack: p.ours(), flags: ACK, payload: Buffer.alloc(10) });
    await p.settle();
    const closed = closeInfo(p.s);
    p.send({ seq: 11, ack: 0, flags: RST });
    expect(await closed).toMatchObject({ cause: "peer-reset" });
  });

  it("its closing RST after its last data was lost draws a challenge; its RST answer to that closes", async () => {
    const p = await phantunClient();
    p.send({ seq: 1, ack: p.ours(), flags: ACK, payload: Buffer.alloc(10) });
    await p.settle();
    p.take();
    // Data seq 11..20 lost; phantun closes with seq 21.
    p.send({ seq: 21, ack: 0, flags: RST });
    await p.settle();
    expect(p.s.closed).toBe(false);
    const [challenge] = p.take();
    expect(challenge).toMatchObject({ flags: ACK, seq: p.ours(), ack: 11 });
    expect(p.stack.stats()).toMatchObject({ rstChallenged: 1, challengeAcks: 1 });
    // The tuple is unknown to phantun now: RST+ACK, seq = the challenge's ack.
    const closed = closeInfo(p.s);
    p.send({ seq: challenge.ack, ack: challenge.seq, flags: RST | ACK });
    expect(await closed).toMatchObject({ cause: "peer-reset" });
    // No probes for a phantun peer: the challenge was all.
    expect(p.s.counters.probesSent).toBe(0);
  });

  it("a restarted phantun answers our next segment with RST, seq = its ack: closes", async () => {
    const p = await phantunClient();
    p.send({ seq: 1, ack: p.ours(), flags: ACK, payload: Buffer.alloc(10) });
    await p.settle();
    p.take();
    p.s.send(Buffer.from("are you there"));
    await p.settle();
    const [data] = p.take();
    const closed = closeInfo(p.s);
    p.send({ seq: data.ack, ack: data.seq + data.payload.length, flags: RST | ACK });
    expect(await closed).toMatchObject({ cause: "peer-reset" });
  });

  it("an RST outside the window is counted and ignored; no challenge", async () => {
    const p = await phantunClient();
    p.send({ seq: 0x9000_0000, ack: 0, flags: RST });
    await p.settle();
    expect(p.s.closed).toBe(false);
    expect(p.take()).toEqual([]);
    expect(p.stack.stats()).toMatchObject({ rstOutOfWindow: 1, rstChallenged: 0 });
  });

  it("challenges are rate-limited per connection and stack-wide", async () => {
    vi.useFakeTimers();
    const p = peer({ stack: { challengeIntervalMs: 250, challengeRatePerSecond: 2 } });
    p.stack.listen(4567);
    const sockets: Socket[] = [];
    for (let port = 1000; port < 1010; port++) {
      p.send({ srcPort: port, seq: 0, ack: 0, flags: SYN });
      await p.settle();
      const [synAck] = p.take();
      p.send({ srcPort: port, seq: 1, ack: u32(synAck.seq + 1), flags: ACK });
      sockets.push(await p.stack.accept());
    }
    await p.settle();
    p.take();
    // Per connection: two doubtful RSTs 100 ms apart draw one challenge.
    p.send({ srcPort: 1000, seq: 5, ack: 0, flags: RST });
    await vi.advanceTimersByTimeAsync(100);
    p.send({ srcPort: 1000, seq: 6, ack: 0, flags: RST });
    await p.settle();
    expect(p.take()).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1000);
    // Stack-wide: one doubtful RST on each of 10 connections at once; the second's budget is
    // 2 or 3 (drawn at random between 2 and 1.5 x 2).
    for (let port = 1000; port < 1010; port++)
      p.send({ srcPort: port, seq: 5, ack: 0, flags: RST });
    await p.settle();
    const sent = p.take().length;
    expect(sent).toBeGreaterThanOrEqual(2);
    expect(sent).toBeLessThanOrEqual(3);
    expect(p.stack.stats().challengeRateLimited).toBe(1 + 10 - sent);
    for (const s of sockets) expect(s.closed).toBe(false);
  });
});

describe("RSTs between two stacks of ours", () => {
  async function ours() {
    const t = pairOf({ client: { verifyIntervalMs: 300, deadPeerProbes: 3 } });
    t.server.listen(7000);
    const [c, s] = await Promise.all([t.client.connect("192.168.201.2:7000"), t.server.accept()]);
    expect(c.peerIsOurs && s.peerIsOurs).toBe(true);
    s.send(Buffer.alloc(100));
    await t.pair.settle();
    /** An RST with this seq, as if from the server, written into the client's side. */
    const forgeRst = (seq: number) =>
      t.pair.b[0].write(
        buildPacket({
          src: parseIpv4(SERVER4)!,
          dst: parseIpv4(CLIENT4)!,
          srcPort: 7000,
          dstPort: c.localPort,
          seq: u32(seq),
          ack: 0,
          flags: RST,
        }),
      );
    /** The same towards the server, as if from the client. */
    const forgeRstToServer = (seq: number) =>
      t.pair.a[0].write(
        buildPacket({
          src: parseIpv4(CLIENT4)!,
          dst: parseIpv4(SERVER4)!,
          srcPort: c.localPort,
          dstPort: 7000,
          seq: u32(seq),
          ack: 0,
          flags: RST,
        }),
      );
    return { ...t, c, s, forgeRst, forgeRstToServer };
  }

  it("a doubtful RST while the server is alive: challenge and fast check, answered, stays open", async () => {
    vi.useFakeTimers();
    const t = await ours();
    t.forgeRst(t.c.rcvHigh + 5);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(t.c.closed).toBe(false);
    expect(t.client.stats()).toMatchObject({ rstChallenged: 1, challengeAcks: 1 });
    expect(t.c.counters.probesAnswered).toBeGreaterThanOrEqual(1);
  });

  it("a doubtful RST and then silence: closed after the fast check's probes (about 1 s)", async () => {
    vi.useFakeTimers();
    const t = await ours();
    const closed = closeInfo(t.c);
    const at = Date.now();
    let closedAt = 0;
    t.c.once("close", () => {
      closedAt = Date.now();
    });
    t.forgeRst(t.c.rcvHigh + 5);
    t.pair.bToA.filter = () => false; // from now on the server's answers never arrive
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await closed).toMatchObject({ cause: "peer-reset" });
    // 3 probes 300 ms apart, then the next tick (100 ms).
    expect(closedAt - at).toBeGreaterThanOrEqual(900);
    expect(closedAt - at).toBeLessThanOrEqual(1_000);
    expect(t.c.counters.probesSent).toBe(3);
  });

  it("a doubtful RST on a busy flow: the peer's new data ends the fast check, even with its answers lost", async () => {
    vi.useFakeTimers();
    const t = await ours();
    t.forgeRstToServer(t.s.rcvHigh + 5);
    // From now on the client's pure ACKs (its probe answers among them) are lost; its data
    // gets through.
    t.pair.aToB.filter = (packet) => packet.length > 40;
    for (let i = 0; i < 60; i++) {
      t.c.send(Buffer.alloc(200));
      await vi.advanceTimersByTimeAsync(50);
    }
    expect(t.s.closed).toBe(false);
    expect(t.server.stats()).toMatchObject({ rstChallenged: 1 });
    expect(t.s.counters.probesSent).toBeGreaterThanOrEqual(1);
    expect(t.s.counters.probesAnswered).toBe(0);
  });

  it("a slow path: an answer that arrives after the next probe went out still counts", async () => {
    vi.useFakeTimers();
    const t = await ours();
    t.forgeRst(t.c.rcvHigh + 5);
    t.pair.bToA.holding = true; // the server's answers are held back...
    await vi.advanceTimersByTimeAsync(350); // ...while the client sends its second probe
    expect(t.c.counters.probesSent).toBe(2);
    t.pair.bToA.release([0]); // the answer to the first probe arrives; the second is lost
    t.pair.bToA.filter = () => false; // and nothing more ever comes back
    await vi.advanceTimersByTimeAsync(3_000);
    expect(t.c.closed).toBe(false);
    expect(t.c.counters.probesAnswered).toBe(1);
  });

  it("a server of ours that restarted answers our next datagram with an exact RST: closes", async () => {
    const t = await ours();
    // The server's stack dies without a word; a new one starts on the same addresses.
    t.pair.bToA.filter = () => false;
    t.server.close();
    await t.pair.settle();
    t.pair.bToA.filter = null;
    const { Stack } = await import("../src/index.js");
    const again = new Stack({ queues: t.pair.b, local4: SERVER4 });
    closeLater(() => again.close());
    again.listen(7000);
    const closed = closeInfo(t.c);
    t.c.send(Buffer.from("hello?"));
    expect(await closed).toMatchObject({ cause: "peer-reset" });
  });
});
