/**
 * The segment writer's data headers, written one by one (no offload): every datagram's IPv4
 * total length, header checksum and TCP checksum must match its own length, also when the
 * length changes between datagrams of one connection or the connection changes (the writer
 * keeps a per-family header template and rewrites only what changed).
 */
import { describe, expect, it } from "vitest";
import type { DeviceQueue } from "../src/device.js";
import { type SegmentTuple, SegmentWriter, WriteResult } from "../src/stack/segment-writer.js";
import { ipv4PseudoBase } from "../src/wire/checksum.js";
import { ipv4HeaderBaseSum, ipv4HeaderChecksumValid } from "../src/wire/ipv4.js";
import { tcpChecksumValid } from "../src/wire/segment.js";

function tuple(local: number, remote: number, localPort: number): SegmentTuple {
  return {
    family: 4,
    l0: local | 0,
    l1: 0,
    l2: 0,
    l3: 0,
    r0: remote | 0,
    r1: 0,
    r2: 0,
    r3: 0,
    localPort,
    remotePort: 4567,
    pseudoBase: ipv4PseudoBase(local, remote),
    ipBase: ipv4HeaderBaseSum(local, remote),
  };
}

/** A queue that keeps a copy of every packet written. */
function capturingQueue(): DeviceQueue & { packets: Buffer[] } {
  const packets: Buffer[] = [];
  return {
    packets,
    mtu: 1500,
    checksumOffload: false,
    writeGather(header: Uint8Array, payload: Uint8Array) {
      packets.push(Buffer.concat([header, payload]));
      return true;
    },
  } as unknown as DeviceQueue & { packets: Buffer[] };
}

describe("segment writer: data headers", () => {
  it("IPv4: lengths and checksums follow each datagram across length and connection changes", () => {
    const w = new SegmentWriter(false);
    const q = capturingQueue();
    const a = tuple(0x0a000001, 0x0a000002, 1000);
    const b = tuple(0x0a000001, 0x0a000003, 1001);
    const sends: [SegmentTuple, number][] = [
      [a, 100],
      [a, 100],
      [a, 1400],
      [a, 1400],
      [a, 7],
      [b, 7],
      [b, 300],
      [a, 300],
      [a, 300],
      [b, 1],
    ];
    let seq = 5;
    for (const [t, size] of sends) {
      const r = w.writeData(q, t, seq, 9, Buffer.alloc(size, size & 0xff));
      expect(r).toBe(WriteResult.ok);
      seq += size;
    }
    expect(q.packets.length).toBe(sends.length);
    q.packets.forEach((p, i) => {
      const [t, size] = sends[i];
      expect(p.length).toBe(40 + size);
      expect(p.readUInt16BE(2)).toBe(40 + size);
      expect(p.readUInt32BE(16)).toBe(t.r0 >>> 0);
      expect(ipv4HeaderChecksumValid(p, 0)).toBe(true);
      expect(tcpChecksumValid(p)).toBe(true);
    });
  });
});
