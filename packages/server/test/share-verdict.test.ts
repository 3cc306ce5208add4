/**
 * The --share verdict's decision on a queued packet: keyed SYNs are admitted (a retransmission
 * from the same client end again), anything else and a replay from another client end go to
 * the host's service.
 */

import { TunnelKey, tokenSlotOf, wire } from "fake-tcp";
import { describe, expect, it } from "vitest";
import { KeyedSynFilter } from "../src/share-verdict.js";

const PORT = 443;
const NOW = 1_796_000_000_000;
const KEY = new TunnelKey(new Uint8Array(32).fill(3));
const OTHER_KEY = new TunnelKey(new Uint8Array(32).fill(4));

function syn(o: {
  family?: 4 | 6;
  src?: string;
  srcPort?: number;
  nonce?: number;
  key?: TunnelKey;
  flags?: number;
  timestamps?: boolean;
}): Buffer {
  const nonce = o.nonce ?? 0x1234_5678;
  const options = Buffer.from([2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7]);
  options.writeUInt32BE((o.key ?? KEY).synToken(PORT, tokenSlotOf(NOW), nonce) >>> 0, 8);
  const v6 = o.family === 6;
  const src = o.src ?? (v6 ? "2001:db8::2" : "198.51.100.2");
  return wire.buildPacket({
    src: v6 ? wire.parseIpv6(src)! : wire.parseIpv4(src)!,
    dst: v6 ? wire.parseIpv6("2001:db8::1")! : wire.parseIpv4("203.0.113.1")!,
    srcPort: o.srcPort ?? 40_000,
    dstPort: PORT,
    seq: nonce,
    ack: 0,
    flags: o.flags ?? wire.TcpFlags.SYN,
    rawOptions: o.timestamps === false ? Uint8Array.of(2, 4, 5, 0xb4) : Uint8Array.from(options),
  });
}

function filter() {
  const stats = { replayed: 0 };
  const f = new KeyedSynFilter(KEY, PORT, stats);
  const admits = (p: Buffer, now = NOW) => f.admits(p, 0, p.length, now);
  return { stats, admits };
}

describe("KeyedSynFilter", () => {
  it.each([4, 6] as const)("admits a keyed SYN over IPv%i, and its retransmission", (family) => {
    const { stats, admits } = filter();
    expect(admits(syn({ family }))).toBe(true);
    expect(admits(syn({ family }), NOW + 3_000)).toBe(true);
    expect(stats.replayed).toBe(0);
  });

  it.each([4, 6] as const)(
    "sends a replay from another client end to the service (IPv%i)",
    (family) => {
      const { stats, admits } = filter();
      expect(admits(syn({ family }))).toBe(true);
      const elsewhere = family === 4 ? "192.0.2.9" : "2001:db8::9";
      expect(admits(syn({ family, src: elsewhere }))).toBe(false);
      expect(admits(syn({ family, srcPort: 40_001 }))).toBe(false);
      expect(stats.replayed).toBe(2);
      // A fresh nonce from there is a new connection.
      expect(admits(syn({ family, src: elsewhere, nonce: 7 }))).toBe(true);
    },
  );

  it("sends everything else to the service", () => {
    const { stats, admits } = filter();
    expect(admits(syn({ key: OTHER_KEY }))).toBe(false);
    expect(admits(syn({ timestamps: false }))).toBe(false);
    expect(admits(syn({ flags: wire.TcpFlags.SYN | wire.TcpFlags.ACK }))).toBe(false);
    expect(admits(syn({}), NOW + 5 * 60_000)).toBe(false); // the token's slots are over
    expect(admits(Buffer.alloc(0))).toBe(false);
    expect(admits(syn({}).subarray(0, 30))).toBe(false);
    expect(stats.replayed).toBe(0);
  });
});
