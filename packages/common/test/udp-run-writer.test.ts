/**
 * The run writer against a recording socket: which datagrams share a send, when a run ends,
 * that the caller's bytes are copied, and how refusals are reported. (The real segmented send
 * is covered by packages/tun's UDP tests and the server relay test.)
 */
import { UDP_MAX_SEGMENTED_BYTES, UDP_MAX_SEGMENTS } from "fake-tcp-tun/udp";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_UDP_RUN,
  isValidUdpRun,
  type RunCounting,
  type RunSocket,
  UdpRunWriter,
} from "../src/udp-run-writer.js";

interface Sent {
  datagrams: string[];
  segmentSize: number | null;
  record: Uint8Array | undefined;
}

class RecordingRunSocket implements RunSocket {
  readonly sent: Sent[] = [];
  refuse = false;
  send(buffer: Uint8Array, offset: number, length: number, record?: Uint8Array): boolean {
    this.sent.push({
      datagrams: [Buffer.from(buffer.subarray(offset, offset + length)).toString()],
      segmentSize: null,
      record,
    });
    return !this.refuse;
  }
  sendSegmented(
    buffer: Uint8Array,
    offset: number,
    length: number,
    segmentSize: number,
    record?: Uint8Array,
  ): boolean {
    const datagrams: string[] = [];
    for (let at = offset; at < offset + length; at += segmentSize)
      datagrams.push(
        Buffer.from(buffer.subarray(at, Math.min(at + segmentSize, offset + length))).toString(),
      );
    this.sent.push({ datagrams, segmentSize, record });
    return !this.refuse;
  }
}

const noDrops: RunCounting = {
  sent: () => {},
  refused: (n) => {
    throw new Error(`unexpected drop of ${n}`);
  },
};

describe("UdpRunWriter", () => {
  it("sends a run of equal datagrams (and a shorter last one) in one segmented send, at the end of the task", async () => {
    const socket = new RecordingRunSocket();
    const writer = new UdpRunWriter();
    const record = new Uint8Array(32);
    for (const d of ["aaaa", "bbbb", "cccc", "dd"])
      writer.send(socket, Buffer.from(d), record, noDrops);
    expect(socket.sent).toEqual([]);
    await Promise.resolve();
    expect(socket.sent).toEqual([
      { datagrams: ["aaaa", "bbbb", "cccc", "dd"], segmentSize: 4, record },
    ]);
  });

  it("ends a run at another destination, another socket, a longer datagram or after a short one", () => {
    const s1 = new RecordingRunSocket();
    const s2 = new RecordingRunSocket();
    const writer = new UdpRunWriter();
    const r1 = new Uint8Array(32);
    const r2 = new Uint8Array(32);
    writer.send(s1, Buffer.from("11"), r1, noDrops);
    writer.send(s1, Buffer.from("22"), r1, noDrops);
    writer.send(s1, Buffer.from("33"), r2, noDrops); // other peer
    writer.send(s2, Buffer.from("44"), r2, noDrops); // other socket
    writer.send(s2, Buffer.from("555"), r2, noDrops); // longer
    writer.send(s2, Buffer.from("5"), r2, noDrops); // shorter: ends the run after it
    writer.send(s2, Buffer.from("6"), r2, noDrops);
    writer.flush();
    expect(s1.sent.map((s) => s.datagrams)).toEqual([["11", "22"], ["33"]]);
    expect(s1.sent.map((s) => s.segmentSize)).toEqual([2, null]);
    expect(s2.sent.map((s) => s.datagrams)).toEqual([["44"], ["555", "5"], ["6"]]);
  });

  it("calls afterSend once after every send (runs, single datagrams, oversize ones), never before", () => {
    const events: string[] = [];
    const socket = new RecordingRunSocket();
    const logged: RunSocket = {
      send: (...args) => {
        events.push("send");
        return socket.send(...args);
      },
      sendSegmented: (...args) => {
        events.push("sendSegmented");
        return socket.sendSegmented(...args);
      },
    };
    const writer = new UdpRunWriter(2, () => events.push("yield"));
    for (const d of ["aa", "bb", "cc"]) writer.send(logged, Buffer.from(d), undefined, noDrops);
    writer.send(logged, Buffer.alloc(UDP_MAX_SEGMENTED_BYTES + 1), undefined, noDrops);
    writer.flush();
    writer.flush(); // nothing pending: no send, no yield
    expect(events).toEqual(["sendSegmented", "yield", "send", "yield", "send", "yield"]);
  });

  it("copies the caller's bytes, so a reused view does not change what is sent", () => {
    const socket = new RecordingRunSocket();
    const writer = new UdpRunWriter();
    const view = Buffer.from("first");
    writer.send(socket, view, undefined, noDrops);
    view.write("XXXXX");
    writer.send(socket, view, undefined, noDrops);
    writer.flush();
    expect(socket.sent[0].datagrams).toEqual(["first", "XXXXX"]);
  });

  it("keeps runs within the segment and byte limits of one send", () => {
    const socket = new RecordingRunSocket();
    const writer = new UdpRunWriter(UDP_MAX_SEGMENTS);
    for (let i = 0; i < UDP_MAX_SEGMENTS + 1; i++)
      writer.send(socket, Buffer.alloc(10, 65), undefined, noDrops);
    const big = Math.floor(UDP_MAX_SEGMENTED_BYTES / 2) + 1;
    writer.send(socket, Buffer.alloc(big), undefined, noDrops);
    writer.send(socket, Buffer.alloc(big), undefined, noDrops);
    writer.flush();
    expect(socket.sent.map((s) => s.datagrams.length)).toEqual([UDP_MAX_SEGMENTS, 1, 1, 1]);
  });

  it("reports every datagram of a refused run to that run's counting, when it is written", () => {
    const socket = new RecordingRunSocket();
    socket.refuse = true;
    const writer = new UdpRunWriter();
    const drops: number[] = [];
    const sent: number[] = [];
    const counting = (scale: number): RunCounting => ({
      sent: (n) => sent.push(scale * n),
      refused: (n) => drops.push(scale * n),
    });
    for (let i = 0; i < 3; i++) writer.send(socket, Buffer.from("x"), undefined, counting(1));
    expect(drops).toEqual([]);
    writer.send(socket, Buffer.from("longer"), undefined, counting(10));
    expect(drops).toEqual([3]);
    writer.flush();
    expect(drops).toEqual([3, 10]);
    expect(sent).toEqual([]);
  });

  it("counts datagrams as sent when their run is written, not when it takes them", () => {
    const socket = new RecordingRunSocket();
    const writer = new UdpRunWriter();
    const sent: number[] = [];
    const counting: RunCounting = { sent: (n) => sent.push(n), refused: noDrops.refused };
    for (const d of ["aa", "bb", "cc"]) writer.send(socket, Buffer.from(d), undefined, counting);
    expect(sent).toEqual([]);
    writer.flush();
    expect(sent).toEqual([3]);
    writer.send(socket, Buffer.alloc(0), undefined, counting); // written on its own, now
    expect(sent).toEqual([3, 1]);
  });

  it("sends an empty datagram on its own, never as a segment size of 0", () => {
    const socket = new RecordingRunSocket();
    const writer = new UdpRunWriter();
    writer.send(socket, Buffer.alloc(0), undefined, noDrops);
    writer.flush();
    expect(socket.sent).toEqual([{ datagrams: [""], segmentSize: null, record: undefined }]);
  });

  it("with a run cap of N, ends every run after N datagrams; 1 sends each datagram alone", () => {
    const socket = new RecordingRunSocket();
    const writer = new UdpRunWriter(8);
    for (let i = 0; i < 20; i++) writer.send(socket, Buffer.from(`d${i % 10}`), undefined, noDrops);
    writer.flush();
    expect(socket.sent.map((s) => s.datagrams.length)).toEqual([8, 8, 4]);
    expect(socket.sent.map((s) => s.segmentSize)).toEqual([2, 2, 2]);

    const single = new RecordingRunSocket();
    const alone = new UdpRunWriter(1);
    for (let i = 0; i < 3; i++) alone.send(single, Buffer.from("abc"), undefined, noDrops);
    alone.flush();
    expect(single.sent).toEqual(
      Array.from({ length: 3 }, () => ({
        datagrams: ["abc"],
        segmentSize: null,
        record: undefined,
      })),
    );
  });

  it("under any cap, sends every datagram once, in order, in runs no longer than the cap", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: UDP_MAX_SEGMENTS }),
        fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 300 }),
        (cap, lengths) => {
          const socket = new RecordingRunSocket();
          const writer = new UdpRunWriter(cap);
          const datagrams = lengths.map((len, i) => String.fromCharCode(65 + (i % 26)).repeat(len));
          for (const d of datagrams) writer.send(socket, Buffer.from(d), undefined, noDrops);
          writer.flush();
          expect(socket.sent.flatMap((s) => s.datagrams)).toEqual(datagrams);
          for (const s of socket.sent) expect(s.datagrams.length).toBeLessThanOrEqual(cap);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("refuses a run cap outside 1..UDP_MAX_SEGMENTS; the default is a valid cap", () => {
    expect(isValidUdpRun(DEFAULT_UDP_RUN)).toBe(true);
    expect(new UdpRunWriter().maxRun).toBe(DEFAULT_UDP_RUN);
    for (const bad of [0, -1, 1.5, UDP_MAX_SEGMENTS + 1, Number.NaN]) {
      expect(isValidUdpRun(bad)).toBe(false);
      expect(() => new UdpRunWriter(bad)).toThrow(RangeError);
    }
  });
});
