/**
 * Keyed mode's building blocks: BLAKE2s (known answers, agreement with node's unkeyed
 * blake2s256), the tunnel key's SYN token and SYN-ACK ISN (known answers, slot window),
 * `verifyKeyedSyn` on real packet bytes (both families, everything that must fail, hostile
 * input), and the listener's replay cache.
 */
import { createHash, randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { blake2s, keyState, macBlock } from "../src/keyed/blake2s.js";
import { timestampOptionOffset, verifyKeyedSyn } from "../src/keyed/keyed-syn.js";
import { ReplayCache, STALE_AFTER_SLOTS, SynReplay } from "../src/keyed/replay-cache.js";
import { TOKEN_SLOT_MS, TunnelKey, tokenSlotOf } from "../src/keyed/tunnel-key.js";
import type { SegmentTuple } from "../src/stack/segment-writer.js";
import { buildPacket, parseIpv4, parseIpv6, TcpFlags } from "../src/wire/index.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const range = (n: number) => Uint8Array.from({ length: n }, (_, i) => i);
const SECRET = range(32);
const KEY = new TunnelKey(SECRET);
const PORT = 4567;
/** A clock in the middle of slot 29,000,000 (the slot of the known answers). */
const NOW = 29_000_000 * TOKEN_SLOT_MS + TOKEN_SLOT_MS / 2;

describe("BLAKE2s", () => {
  // Reference values from Python's hashlib.blake2s.
  it.each([
    [
      "abc, unkeyed",
      new TextEncoder().encode("abc"),
      new Uint8Array(0),
      32,
      "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
    ],
    [
      "empty, keyed",
      new Uint8Array(0),
      range(32),
      32,
      "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49",
    ],
    [
      "16 bytes, keyed",
      range(16),
      range(32),
      32,
      "19ba234f0a4f38637d1839f9d9f76ad91c8522307143c97d5f93f69274cec9a7",
    ],
    [
      "one block, keyed",
      range(64),
      range(32),
      32,
      "8975b0577fd35566d750b362b0897a26c399136df07bababbde6203ff2954ed4",
    ],
    [
      "a block and a byte, keyed",
      range(65),
      range(32),
      32,
      "21fe0ceb0052be7fb0f004187cacd7de67fa6eb0938d927677f2398c132317a8",
    ],
    ["200 bytes, short key, 7-byte digest", range(200), Uint8Array.of(0x6b), 7, "ff23367d021a94"],
  ])("gives the reference digest: %s", (_, message, key, outLength, expected) => {
    expect(hex(blake2s(message, key, outLength))).toBe(expected);
  });

  it("agrees with node's blake2s256 on any unkeyed message", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (message) => {
        expect(hex(blake2s(message))).toBe(createHash("blake2s256").update(message).digest("hex"));
      }),
    );
  });

  it("macBlock is the first four bytes of the keyed digest of a short message", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 32 }),
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        (key, message) => {
          const block = new Uint8Array(64);
          block.set(message);
          const mac = macBlock(keyState(key), block, message.length);
          expect(mac.toString(16).padStart(8, "0")).toBe(hex(blake2s(message, key).subarray(0, 4)));
        },
      ),
    );
  });

  it("refuses lengths outside the algorithm's", () => {
    expect(() => blake2s(new Uint8Array(1), new Uint8Array(33))).toThrow(RangeError);
    expect(() => blake2s(new Uint8Array(1), undefined, 0)).toThrow(RangeError);
    expect(() => keyState(new Uint8Array(0))).toThrow(RangeError);
  });
});

describe("the tunnel key", () => {
  it("makes the documented SYN token and SYN-ACK ISN (known answers)", () => {
    // docs/wire-protocol.md gives these as its example.
    expect(KEY.synToken(PORT, 29_000_000, 0x01020304)).toBe(0x17d8b4a4);
    expect(KEY.synAckIsn(PORT, 0x01020304, 0x17d8b4a4)).toBe(0x274b3e31);
  });

  it("accepts tokens of the slot before and after the server's, no further", () => {
    const slot = tokenSlotOf(NOW);
    for (const d of [-1, 0, 1]) {
      const token = KEY.synToken(PORT, slot + d, 77);
      expect(KEY.tokenSlot(PORT, 77, token, NOW)).toBe(slot + d);
    }
    for (const d of [-3, -2, 2, 3]) {
      const token = KEY.synToken(PORT, slot + d, 77);
      expect(KEY.tokenSlot(PORT, 77, token, NOW)).toBe(-1);
    }
  });

  it("binds the token to the port, the nonce and the key", () => {
    const slot = tokenSlotOf(NOW);
    const token = KEY.synToken(PORT, slot, 1234);
    expect(KEY.tokenSlot(PORT + 1, 1234, token, NOW)).toBe(-1);
    expect(KEY.tokenSlot(PORT, 1235, token, NOW)).toBe(-1);
    expect(new TunnelKey(randomBytes(32)).tokenSlot(PORT, 1234, token, NOW)).toBe(-1);
    // The two labels keep a token from passing as an ISN and the other way round.
    expect(KEY.synAckIsn(PORT, slot, 1234)).not.toBe(token);
  });

  it("refuses a secret that is not 32 bytes", () => {
    expect(() => new TunnelKey(new Uint8Array(31))).toThrow(/32 bytes/);
    expect(() => new TunnelKey(new Uint8Array(33))).toThrow(/32 bytes/);
  });
});

/** A keyed SYN as our client sends it (Linux's option layout), over IPv4 or IPv6. */
function keyedSyn(o: {
  family?: 4 | 6;
  port?: number;
  nonce?: number;
  tsval?: number;
  flags?: number;
  rawOptions?: Uint8Array;
}): Buffer {
  const nonce = o.nonce ?? 0xdeadbeef;
  const port = o.port ?? PORT;
  const tsval = o.tsval ?? KEY.synToken(port, tokenSlotOf(NOW), nonce);
  const options = Buffer.from([2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7]);
  options.writeUInt32BE(tsval >>> 0, 8);
  const v6 = o.family === 6;
  return buildPacket({
    src: v6 ? parseIpv6("fcc8::2")! : parseIpv4("192.168.200.2")!,
    dst: v6 ? parseIpv6("fcc9::2")! : parseIpv4("192.168.201.2")!,
    srcPort: 40000,
    dstPort: PORT,
    seq: nonce,
    ack: 0,
    flags: o.flags ?? TcpFlags.SYN,
    rawOptions: o.rawOptions ?? options,
  });
}

describe("verifyKeyedSyn", () => {
  it.each([4, 6] as const)("accepts our keyed SYN over IPv%i", (family) => {
    expect(verifyKeyedSyn(keyedSyn({ family }), KEY, PORT, NOW)).toBe(true);
  });

  it("finds the packet at an offset in a larger buffer", () => {
    const syn = keyedSyn({});
    const buf = Buffer.concat([Buffer.alloc(13, 0xff), syn, Buffer.alloc(7, 0xff)]);
    expect(verifyKeyedSyn(buf, KEY, PORT, NOW, 13, syn.length)).toBe(true);
    expect(verifyKeyedSyn(buf, KEY, PORT, NOW, 12, syn.length)).toBe(false);
    expect(verifyKeyedSyn(buf, KEY, PORT, NOW, 13, buf.length)).toBe(false);
  });

  it("refuses anything else", () => {
    const cases: Record<string, Buffer> = {
      "another port's token": keyedSyn({ port: PORT + 1 }),
      "another nonce": keyedSyn({ tsval: KEY.synToken(PORT, tokenSlotOf(NOW), 1) }),
      "a token two slots old": keyedSyn({
        tsval: KEY.synToken(PORT, tokenSlotOf(NOW) - 2, 0xdeadbeef),
      }),
      "SYN+ACK": keyedSyn({ flags: TcpFlags.SYN | TcpFlags.ACK }),
      "SYN+ECE+CWR": keyedSyn({ flags: TcpFlags.SYN | TcpFlags.ECE | TcpFlags.CWR }),
      "no options (a phantun SYN)": keyedSyn({ rawOptions: Uint8Array.of(1, 3, 3, 14) }),
      "a timestamp option cut short": keyedSyn({ rawOptions: Uint8Array.of(8, 10, 1, 2, 3) }),
      "a timestamp of the wrong length": keyedSyn({ rawOptions: Uint8Array.of(8, 6, 1, 2, 3, 4) }),
      "an option running past the header": keyedSyn({ rawOptions: Uint8Array.of(2, 40, 5, 0xb4) }),
      "end of options before the timestamp": keyedSyn({
        rawOptions: Uint8Array.of(0, 0, 8, 10, 0x17, 0xd8, 0xb4, 0xa4, 0, 0, 0, 0),
      }),
    };
    for (const [what, packet] of Object.entries(cases))
      expect(verifyKeyedSyn(packet, KEY, PORT, NOW), what).toBe(false);
    expect(verifyKeyedSyn(keyedSyn({}), new TunnelKey(randomBytes(32)), PORT, NOW)).toBe(false);
    expect(verifyKeyedSyn(keyedSyn({}), KEY, PORT + 1, NOW)).toBe(false);
    expect(verifyKeyedSyn(keyedSyn({}), KEY, PORT, NOW + 2 * TOKEN_SLOT_MS)).toBe(false);
  });

  it("never throws and never reads past the given bytes, whatever they are", () => {
    const good = keyedSyn({});
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 120 }),
        fc.nat(good.length),
        fc.integer({ min: -5, max: 200 }),
        (junk, cut, offset) => {
          expect(typeof verifyKeyedSyn(junk, KEY, PORT, NOW)).toBe("boolean");
          expect(typeof verifyKeyedSyn(junk, KEY, PORT, NOW, offset)).toBe("boolean");
          // A keyed SYN cut anywhere is refused: the bytes past the cut are not looked at.
          if (cut < good.length) expect(verifyKeyedSyn(good, KEY, PORT, NOW, 0, cut)).toBe(false);
        },
      ),
    );
  });

  it("timestampOptionOffset walks NOPs and other options to the timestamp", () => {
    const opts = Uint8Array.of(2, 4, 5, 0xb4, 1, 1, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0);
    expect(timestampOptionOffset(opts, 0, opts.length)).toBe(10);
    expect(timestampOptionOffset(opts, 0, 12)).toBe(-1);
    expect(timestampOptionOffset(Uint8Array.of(1, 1, 1), 0, 3)).toBe(-1);
  });
});

function tuple(address: number, port: number): SegmentTuple {
  return {
    family: 4,
    r0: address | 0,
    r1: 0,
    r2: 0,
    r3: 0,
    l0: 0,
    l1: 0,
    l2: 0,
    l3: 0,
    remotePort: port,
    localPort: PORT,
    pseudoBase: 0,
    ipBase: 0,
  };
}

describe("the replay cache", () => {
  const client = tuple(0x0ac90201, 40000);
  const elsewhere = tuple(0x0ac90242, 40000);
  const slot = tokenSlotOf(NOW);
  const tsval = KEY.synToken(PORT, slot, 99);
  const isn = KEY.synAckIsn(PORT, 99, tsval);

  it("answers a token again from its first tuple only", () => {
    const cache = new ReplayCache(16);
    expect(cache.admitSyn(client, 99, tsval, slot, NOW)).toBe(SynReplay.fresh);
    expect(cache.admitSyn(client, 99, tsval, slot, NOW + 1000)).toBe(SynReplay.again);
    expect(cache.admitSyn(elsewhere, 99, tsval, slot, NOW + 1000)).toBe(SynReplay.replay);
    expect(cache.admitSyn(tuple(0x0ac90201, 40001), 99, tsval, slot, NOW)).toBe(SynReplay.replay);
  });

  it("believes the handshake's ACK from that tuple with that ISN only", () => {
    const cache = new ReplayCache(16);
    expect(cache.provesAck(client, 99, isn + 1, KEY, PORT, NOW)).toBe(false);
    cache.admitSyn(client, 99, tsval, slot, NOW);
    expect(cache.provesAck(client, 99, isn + 1, KEY, PORT, NOW)).toBe(true);
    expect(cache.provesAck(client, 99, isn, KEY, PORT, NOW)).toBe(false);
    expect(cache.provesAck(elsewhere, 99, isn + 1, KEY, PORT, NOW)).toBe(false);
    expect(cache.provesAck(client, 98, isn + 1, KEY, PORT, NOW)).toBe(false);
  });

  it("believes the ISN of either token when a retransmission crossed a slot boundary", () => {
    const cache = new ReplayCache(16);
    const later = KEY.synToken(PORT, slot + 1, 99);
    cache.admitSyn(client, 99, tsval, slot, NOW);
    expect(cache.admitSyn(client, 99, later, slot + 1, NOW + TOKEN_SLOT_MS)).toBe(SynReplay.again);
    const now = NOW + TOKEN_SLOT_MS;
    expect(cache.provesAck(client, 99, isn + 1, KEY, PORT, now)).toBe(true);
    expect(cache.provesAck(client, 99, KEY.synAckIsn(PORT, 99, later) + 1, KEY, PORT, now)).toBe(
      true,
    );
  });

  it("forgets an entry once its token and the ACK's extra slot are over", () => {
    const cache = new ReplayCache(16);
    cache.admitSyn(client, 99, tsval, slot, NOW);
    const lastNeeded = NOW + STALE_AFTER_SLOTS * TOKEN_SLOT_MS;
    expect(cache.provesAck(client, 99, isn + 1, KEY, PORT, lastNeeded)).toBe(true);
    const gone = lastNeeded + TOKEN_SLOT_MS;
    expect(cache.provesAck(client, 99, isn + 1, KEY, PORT, gone)).toBe(false);
    // A new token that happens to reuse the nonce is fresh, from anywhere.
    expect(cache.admitSyn(elsewhere, 99, tsval, slot + 3, gone)).toBe(SynReplay.fresh);
  });

  it("is bounded: a full ring overwrites its oldest entry and counts it if still needed", () => {
    const cache = new ReplayCache(4);
    for (let n = 0; n < 6; n++) cache.admitSyn(client, n, n, slot, NOW);
    expect(cache.size).toBe(4);
    expect(cache.liveOverwrites).toBe(2);
    // The two oldest are forgotten: their tokens would be fresh again.
    expect(cache.admitSyn(elsewhere, 0, 0, slot, NOW)).toBe(SynReplay.fresh);
    expect(cache.admitSyn(elsewhere, 5, 5, slot, NOW)).toBe(SynReplay.replay);
    expect(() => new ReplayCache(0)).toThrow(RangeError);
  });
});
