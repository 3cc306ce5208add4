/**
 * UdpReceiveArea on loopback: sockets sharing one set of receive buffers each deliver only
 * their own datagrams (interleaved, more than the area's slots), with the right sources and
 * slot bounds; closing one leaves the others working; bad areas are refused.
 */
import { createSocket, type Socket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UdpBatchSocket, UdpReceiveArea } from "../src/udp.js";

async function until(check: () => boolean, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

describe("UdpReceiveArea (loopback)", () => {
  let sender: Socket;
  let senderPort: number;
  beforeAll(async () => {
    sender = createSocket("udp4");
    await new Promise<void>((resolve) => sender.bind(0, "127.0.0.1", () => resolve()));
    senderPort = sender.address().port;
  });
  afterAll(() => sender.close());

  it("sockets sharing an area each receive only their own datagrams", async () => {
    const area = new UdpReceiveArea(2, 100);
    const got: string[][] = [[], [], []];
    const sources = new Set<number>();
    const batches = new Set<object>();
    const sockets = got.map((list) => {
      const s = UdpBatchSocket.bind({
        address: "127.0.0.1",
        port: 0,
        family: 4,
        receiveArea: area,
      });
      expect(s.batchSize).toBe(2);
      expect(s.maxDatagramBytes).toBe(100);
      s.onReceive((batch) => {
        batches.add(batch);
        for (let i = 0; i < batch.count; i++) {
          const start = batch.start(i);
          const text = batch.buffer.toString("utf8", start, start + batch.length(i));
          list.push(text);
          sources.add(batch.port(i));
          // datagram(i) is the same bytes, as a view of the shared buffer (no copy).
          const view = batch.datagram(i);
          expect(Buffer.from(view).toString("utf8")).toBe(text);
          expect(view.buffer).toBe(batch.buffer.buffer);
          expect(view.byteOffset).toBe(batch.buffer.byteOffset + start);
        }
      });
      return s;
    });
    const ports = sockets.map((s) => s.localAddress().port);
    for (let n = 0; n < 12; n++) {
      for (const [i, port] of ports.entries()) sender.send(`s${i}-${n}`, port, "127.0.0.1");
    }
    sender.send("x".repeat(101), ports[2], "127.0.0.1"); // beyond the area's slot: dropped
    await until(
      () => got.every((list) => list.length === 12) && sockets[2].stats().truncated === 1,
    );
    got.forEach((list, i) => {
      expect(list).toEqual(Array.from({ length: 12 }, (_, n) => `s${i}-${n}`));
    });
    expect(sockets[2].stats().truncated).toBe(1);
    expect([...sources]).toEqual([senderPort]);
    expect(batches.size).toBe(1); // one batch view for the whole area

    sockets[0].close();
    sender.send("after", ports[1], "127.0.0.1");
    await until(() => got[1].length === 13);
    expect(got[1][12]).toBe("after");
    for (const s of sockets) s.close();
  });

  it("refuses bad sizes", () => {
    expect(() => new UdpReceiveArea(0, 1500)).toThrow(/batchSize 0/);
    expect(() => new UdpReceiveArea(2000, 1500)).toThrow(/batchSize 2000/);
    expect(() => new UdpReceiveArea(16, 70_000)).toThrow(/maxDatagramBytes 70000/);
  });
});
