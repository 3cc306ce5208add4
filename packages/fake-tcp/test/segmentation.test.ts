/**
 * Segmentation offload over the in-memory pair: runs of datagrams written as one coalesced
 * packet on the send side (the link splits them as a kernel would), and coalesced packets
 * split back into datagrams on the receive side. On the wire nothing may change.
 */
import { describe, expect, it } from "vitest";
import { buildPacket, parseIpv4, TcpFlags } from "../src/wire/index.js";
import { CLIENT4, closedAfterEachTest, SERVER4, summarize } from "./helpers.js";
import { deliverCoalesced } from "./receive-fuzzing.js";

const { ACK, RST } = TcpFlags;

const { peer, pairOf } = closedAfterEachTest();

function offloadPair() {
  const t = pairOf({ pair: { checksumOffload: true, segmentationOffload: true } });
  return t;
}

function datagram(size: number, tag: number): Buffer {
  return Buffer.alloc(size, tag & 0xff);
}

describe("send side: runs written as one segmented packet", () => {
  for (const family of [4, 6] as const) {
    it(`IPv${family}: a burst becomes one write; segments and sequence numbers as if sent one by one`, async () => {
      const { pair, client, server } = offloadPair();
      server.listen(7000);
      const target = family === 4 ? "192.168.201.2:7000" : "[fcc9::2]:7000";
      const [c, s] = await Promise.all([client.connect(target), server.accept()]);
      await pair.settle();
      const got: Buffer[] = [];
      s.onDatagram((d) => got.push(Buffer.from(d)));
      pair.aToB.capture = true;
      const sizes = [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 480];
      const writesBefore = pair.a[0].segmentedWrites;
      for (let i = 0; i < sizes.length; i++) expect(c.send(datagram(sizes[i], i))).toBe(true);
      // Nothing is written until the task ends.
      expect(pair.aToB.captured.length).toBe(0);
      await pair.settle();
      expect(pair.a[0].segmentedWrites - writesBefore).toBe(1);
      expect(pair.a[0].badRuns).toBe(0);
      const wire = pair.aToB.captured.map(summarize);
      expect(wire.map((w) => w.payload.length)).toEqual(sizes);
      for (let i = 1; i < wire.length; i++) {
        expect(wire[i].seq).toBe((wire[i - 1].seq + sizes[i - 1]) >>> 0);
        expect(wire[i].flags).toBe(ACK);
        expect(wire[i].ack).toBe(wire[0].ack);
      }
      expect(got.map((d) => d.length)).toEqual(sizes);
      expect(got.every((d, i) => d.every((b) => b === i))).toBe(true);
      expect(c.counters.datagramsSent).toBe(sizes.length);
      expect(s.counters.datagramsReceived).toBe(sizes.length);
    });
  }

  it("a longer datagram, another socket or a short one ends the run; order is kept", async () => {
    const { pair, client, server } = offloadPair();
    server.listen(7000);
    const [c1, s1] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    const [c2, s2] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    await pair.settle();
    const at1: number[] = [];
    const at2: number[] = [];
    s1.onDatagram((d) => at1.push(d.length));
    s2.onDatagram((d) => at2.push(d.length));
    const writesBefore = pair.a[0].segmentedWrites;
    // Runs: [500 500 200] [900] [c2: 300 300] [c1: 700 700 700] [c1: 800]
    for (const n of [500, 500, 200, 900]) c1.send(datagram(n, n));
    for (const n of [300, 300]) c2.send(datagram(n, n));
    for (const n of [700, 700, 700, 800]) c1.send(datagram(n, n));
    await pair.settle();
    expect(at1).toEqual([500, 500, 200, 900, 700, 700, 700, 800]);
    expect(at2).toEqual([300, 300]);
    expect(pair.a[0].segmentedWrites - writesBefore).toBe(3);
    expect(pair.a[0].badRuns).toBe(0);
  });

  it("with segmentationOffload: false every segment is written alone", async () => {
    const t = pairOf({
      pair: { checksumOffload: true, segmentationOffload: true },
      client: { segmentationOffload: false },
    });
    t.server.listen(7000);
    const [c, s] = await Promise.all([t.client.connect("192.168.201.2:7000"), t.server.accept()]);
    await t.pair.settle();
    let received = 0;
    s.onDatagram(() => received++);
    t.pair.aToB.capture = true;
    for (let i = 0; i < 10; i++) c.send(datagram(500, i));
    // Written at once, one packet per datagram, none through writeSegmented.
    expect(t.pair.aToB.captured.length).toBe(10);
    await t.pair.settle();
    expect(received).toBe(10);
    expect(t.pair.a[0].segmentedWrites).toBe(0);
  });

  it("a run stops at the device's limit (here the 16-bit IP length); nothing is lost", async () => {
    const { pair, client, server } = offloadPair();
    server.listen(7000);
    const [c, s] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    await pair.settle();
    let received = 0;
    s.onDatagram(() => received++);
    const writesBefore = pair.a[0].segmentedWrites;
    for (let i = 0; i < 100; i++) c.send(datagram(1400, i));
    await pair.settle();
    expect(received).toBe(100);
    // 65495 bytes of payload fit 46 datagrams of 1400: runs of 46, 46, 8.
    expect(pair.a[0].segmentedWrites - writesBefore).toBe(3);
  });

  for (const family of [4, 6] as const) {
    it(`IPv${family}: a run never carries more than the device's own limit`, async () => {
      // 4000 bytes a run: 1400-byte datagrams go two by two (2800), never three (4200).
      const t = pairOf({
        pair: { checksumOffload: true, segmentationOffload: true, maxSegmentedPayload: 4000 },
      });
      const { pair, client, server } = t;
      expect(pair.a[0].maxSegmentedPayload(family)).toBe(4000);
      server.listen(7000);
      const target = family === 4 ? "192.168.201.2:7000" : "[fcc9::2]:7000";
      const [c, s] = await Promise.all([client.connect(target), server.accept()]);
      await pair.settle();
      let received = 0;
      s.onDatagram(() => received++);
      const writesBefore = pair.a[0].segmentedWrites;
      for (let i = 0; i < 10; i++) c.send(datagram(1400, i));
      await pair.settle();
      expect(received).toBe(10);
      expect(pair.a[0].segmentedWrites - writesBefore).toBe(5);
      expect(pair.a[0].badRuns).toBe(0);
    });
  }

  it("an RST from close() follows the data sent before it", async () => {
    const { pair, client, server } = offloadPair();
    server.listen(7000);
    const [c] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    await pair.settle();
    pair.aToB.capture = true;
    c.send(datagram(100, 1));
    c.send(datagram(100, 2));
    c.close();
    await pair.settle();
    // (The server's answer to the first data may draw an RST-ACK from the closed client later.)
    const flags = pair.aToB.captured.map((p) => summarize(p).flags);
    expect(flags.slice(0, 3)).toEqual([ACK, ACK, RST]);
  });

  it("a run's datagrams are counted as sent when the run is written, not when it takes them", async () => {
    const { pair, client, server } = offloadPair();
    server.listen(7000);
    const [c] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    await pair.settle();
    const sentBefore = c.counters.datagramsSent;
    const packetsBefore = client.stats().packetsSent;
    for (let i = 0; i < 5; i++) expect(c.send(datagram(100, i))).toBe(true);
    expect(c.counters.datagramsSent).toBe(sentBefore);
    client.flush();
    expect(c.counters.datagramsSent).toBe(sentBefore + 5);
    expect(client.stats().packetsSent).toBe(packetsBefore + 5);
  });

  it("a refused run is counted as dropped, per datagram", async () => {
    const { pair, client, server } = offloadPair();
    server.listen(7000);
    const [c] = await Promise.all([client.connect("192.168.201.2:7000"), server.accept()]);
    await pair.settle();
    pair.a[0].writeSegmented = () => false;
    const sentBefore = c.counters.datagramsSent;
    for (let i = 0; i < 5; i++) c.send(datagram(100, i));
    client.flush();
    expect(c.counters.datagramsSent).toBe(sentBefore);
    expect(c.counters.droppedByDevice).toBe(5);
    expect(client.stats().droppedByDevice).toBe(5);
  });
});

describe("receive side: coalesced packets split into datagrams", () => {
  it("each segmentSize bytes of a coalesced packet is one datagram; acks cover the whole", async () => {
    const p = peer({ pair: { checksumOffload: true } });
    p.stack.listen(4567);
    const isn = await p.handshake();
    const sock = await p.stack.accept();
    const got: number[] = [];
    sock.onDatagram((d) => got.push(d.length, d[0]));
    // One packet carrying 3 x 600 + 250 bytes, delivered with its segment size as a device
    // with receive offload would.
    const payload = Buffer.concat([
      datagram(600, 1),
      datagram(600, 2),
      datagram(600, 3),
      datagram(250, 4),
    ]);
    const packet = buildPacket({
      src: parseIpv4(CLIENT4)!,
      dst: parseIpv4(SERVER4)!,
      srcPort: 40000,
      dstPort: 4567,
      seq: 1,
      ack: (isn + 1) >>> 0,
      flags: ACK,
      payload,
    });
    deliverCoalesced(p.pair.a[0], packet, 600);
    expect(got).toEqual([600, 1, 600, 2, 600, 3, 250, 4]);
    expect(sock.counters.datagramsReceived).toBe(4);
    p.take();
    sock.send(Buffer.from("reply"));
    await p.settle();
    // Our next segment acknowledges the whole coalesced payload.
    const reply = p.take().find((x) => x.payload.length > 0);
    expect(reply?.ack).toBe(1 + payload.length);
  });
});
