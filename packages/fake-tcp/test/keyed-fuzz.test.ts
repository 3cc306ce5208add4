/**
 * A keyed listener's receive path, fuzzed: batches of valid keyed SYNs (from a small pool of
 * nonces, so that retransmissions and replays from other tuples happen), proofs right and
 * wrong, token-less SYNs, data, RSTs, random and garbage segments, with the clock jumping
 * across token slots. After every batch: nothing threw, the tables stay bounded, and the
 * stack said nothing it should not have: every packet it sent is either a SYN-ACK answering a
 * valid, first-from-that-tuple keyed SYN with the ISN the key gives, or a segment to a tuple
 * that proved a handshake. No RST ever answers a segment for no connection.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { TOKEN_SLOT_MS, TunnelKey, tokenSlotOf } from "../src/keyed/tunnel-key.js";
import { buildPacket, ParseError, SegmentParser, TcpFlags } from "../src/wire/index.js";
import { rawPeer } from "./helpers.js";
import { deliver, fuzzAddresses, garble, nextTask, tupleKey, u32Arb } from "./receive-fuzzing.js";

const { SYN, ACK, RST, PSH } = TcpFlags;
const LISTEN = 4567;
const SECRET = randomBytes(32);
const KEY = new TunnelKey(SECRET);
const NONCES = [0x11111111, 0x22222222, 0x80000000, 0xfffffffe];

interface Seg {
  kind: "keyedSyn" | "staleSyn" | "syn" | "proof" | "data" | "rst" | "random" | "garbage";
  source: number;
  port: number;
  nonce: number;
  delta: number;
  flags: number;
  seq: number;
  ack: number;
  payload: Uint8Array;
  options: Uint8Array | null;
  flips: Array<[number, number]>;
}

const segArb: fc.Arbitrary<Seg> = fc.record({
  kind: fc.constantFrom(
    "keyedSyn",
    "keyedSyn",
    "staleSyn",
    "syn",
    "proof",
    "proof",
    "data",
    "rst",
    "random",
    "garbage",
  ),
  source: fc.integer({ min: 0, max: 2 }),
  port: fc.integer({ min: 0, max: 2 }),
  nonce: fc.integer({ min: 0, max: NONCES.length - 1 }),
  delta: fc.constantFrom(0, 0, 0, 1, -1),
  flags: fc.integer({ min: 0, max: 255 }),
  seq: u32Arb,
  ack: u32Arb,
  payload: fc.uint8Array({ maxLength: 16 }),
  options: fc.option(fc.uint8Array({ maxLength: 40 }), { nil: null }),
  flips: fc.array(fc.tuple(fc.nat(80), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
});
const batchesArb = fc.array(
  fc.record({
    segments: fc.array(segArb, { minLength: 1, maxLength: 12 }),
    advanceMs: fc.constantFrom(0, 0, 0, 2_000, 31_000, TOKEN_SLOT_MS),
  }),
  { minLength: 1, maxLength: 10 },
);

function synOptions(tsval: number): Uint8Array {
  const b = Buffer.from([2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7]);
  b.writeUInt32BE(tsval >>> 0, 8);
  return b;
}

async function runFuzz(family: 4 | 6, batches: Array<{ segments: Seg[]; advanceMs: number }>) {
  // A fixed start (the beginning of a token slot): slot crossings come from the batches' own
  // clock jumps, so a failing run depends on its fast-check seed only, not on the wall clock.
  vi.useFakeTimers({ now: 29_000_000 * 60_000 });
  const p = rawPeer({
    family,
    stack: {
      key: SECRET,
      maxConnections: 6,
      maxConnectionsPerSource: 2,
      acceptBacklog: 3,
      keepaliveIntervalMs: 1_000,
    },
  });
  try {
    p.stack.listen(LISTEN);
    void (async () => {
      for await (const s of p.stack) s.onDatagram(() => {});
    })().catch(() => {});
    const { sources, stackAddr } = fuzzAddresses(family);
    /**
     * The replay cache as the stack must keep it: nonce -> the tuple that sent it first, the
     * latest slot of its tokens and their TSvals; an entry lives while the current slot is at
     * most 2 past its slot.
     */
    const synsSent = new Map<number, { tuple: string; slot: number; tsvals: Set<number> }>();
    /** Tuples that sent a correct proof of an answered handshake. */
    const proven = new Set<string>();
    /** Tuples that completed a handshake, in order: where RSTs are aimed (see "rst"). */
    const provenTuples: { src: (typeof sources)[number]; srcPort: number }[] = [];
    /** The ISN the stack answered each tuple's nonce with. */
    const answered = new Map<string, number>();
    const parser = new SegmentParser();
    let seen = 0;
    let written = 0;
    const audit = () => {
      for (; seen < p.raw.length; seen++) {
        const pkt = p.raw[seen];
        expect(parser.parse(pkt, 0, pkt.length)).toBe(ParseError.ok);
        const t = parser.tcp;
        const dst = family === 4 ? parser.ip4.dst : parser.ip6.dst;
        const key = tupleKey(dst, t.dstPort);
        expect(t.srcPort).toBe(LISTEN);
        if (t.flags === (SYN | ACK)) {
          const nonce = (t.ack - 1) >>> 0;
          const sent = synsSent.get(nonce);
          expect(sent, `SYN-ACK to ${key} for a nonce never sent validly`).toBeDefined();
          expect(sent!.tuple, "SYN-ACK to a replay").toBe(key);
          const isns = [...sent!.tsvals].map((ts) => KEY.synAckIsn(LISTEN, nonce, ts));
          expect(isns).toContain(t.seq);
          answered.set(`${key}#${nonce}`, t.seq);
        } else {
          expect(proven.has(key), `${t.flags} to ${key}, which proved nothing`).toBe(true);
        }
      }
    };
    for (const { segments, advanceMs } of batches) {
      const packets: Buffer[] = [];
      for (const g of segments) {
        let src = sources[g.source];
        let srcPort = 1000 + g.port;
        // Most RSTs go to a tuple with a connection (a keyed stack checks every RST there);
        // random tuples alone reach one too rarely for the run to be sure to check any.
        if (g.kind === "rst" && g.delta !== -1 && provenTuples.length > 0) {
          ({ src, srcPort } = provenTuples[g.seq % provenTuples.length]);
        }
        const key = tupleKey(src, srcPort);
        const nonce = NONCES[g.nonce];
        let flags = g.flags;
        let seq = g.seq;
        let ack = g.ack;
        let payload: Uint8Array = new Uint8Array(0);
        let options: Uint8Array | undefined;
        const now = Date.now();
        switch (g.kind) {
          case "keyedSyn":
          case "staleSyn": {
            const slot = tokenSlotOf(now) - (g.kind === "staleSyn" ? 2 : g.delta === 1 ? 1 : 0);
            const tsval = KEY.synToken(LISTEN, slot, nonce);
            flags = SYN;
            seq = nonce;
            ack = 0;
            options = synOptions(tsval);
            if (g.kind === "keyedSyn") {
              const s = synsSent.get(nonce);
              if (!s || tokenSlotOf(now) - s.slot > 2)
                synsSent.set(nonce, { tuple: key, slot, tsvals: new Set([tsval]) });
              else if (s.tuple === key) {
                s.tsvals.add(tsval);
                s.slot = Math.max(s.slot, slot);
              }
            }
            break;
          }
          case "syn":
            flags = SYN;
            options = g.options ?? undefined;
            break;
          case "proof": {
            const isn = answered.get(`${key}#${nonce}`);
            flags = ACK;
            seq = (nonce + 1) >>> 0;
            ack = isn === undefined ? g.ack : (isn + 1 + g.delta) >>> 0;
            payload = g.delta === 0 ? g.payload : new Uint8Array(0);
            if (isn !== undefined && g.delta === 0) {
              proven.add(key);
              provenTuples.push({ src, srcPort });
            }
            break;
          }
          case "data":
            flags = ACK | PSH;
            payload = g.payload;
            break;
          case "rst":
            flags = g.delta === 0 ? RST : RST | ACK;
            break;
          default:
            payload = g.payload;
            options = g.options ?? undefined;
        }
        let pkt = buildPacket({
          src,
          dst: stackAddr,
          srcPort,
          dstPort: g.kind === "random" && g.delta === 1 ? 9999 : LISTEN,
          seq,
          ack,
          flags,
          payload,
          rawOptions: options,
        });
        if (g.kind === "garbage") pkt = garble(pkt, g.flips);
        packets.push(pkt);
      }
      await nextTask();
      deliver(p.pair.a[0], packets);
      written += packets.length;
      await p.settle();
      audit();
      const st = p.stack.stats();
      const malformed = Object.values(st.malformed).reduce((a, b) => a + b, 0);
      expect(st.packetsReceived + malformed).toBe(written);
      expect(st.rstSent).toBe(0);
      expect(st.connections).toBeLessThanOrEqual(6);
      expect(st.acceptQueue).toBeLessThanOrEqual(3);
      if (advanceMs > 0) {
        await vi.advanceTimersByTimeAsync(advanceMs);
        audit();
      }
    }
    return p.stack.stats();
  } finally {
    p.close();
    vi.useRealTimers();
  }
}

describe("a keyed listener under fuzzed segments", () => {
  it("IPv4: never throws, stays bounded, and answers nothing but key holders", async () => {
    // What the runs reached, so that the property is known to cover the keyed paths.
    const reached = { accepted: 0, synReplayed: 0, cookieFailed: 0, rstChecked: 0, unanswered: 0 };
    await fc.assert(
      fc.asyncProperty(batchesArb, async (batches) => {
        const st = await runFuzz(4, batches);
        reached.accepted += st.accepted;
        reached.synReplayed += st.synReplayed;
        reached.cookieFailed += st.cookieFailed;
        reached.rstChecked += st.rstChecked;
        reached.unanswered += st.unknownUnanswered;
      }),
      { numRuns: 80 },
    );
    for (const [what, n] of Object.entries(reached)) expect(n, what).toBeGreaterThan(0);
  }, 120_000);

  it("IPv6: the same", async () => {
    await fc.assert(
      fc.asyncProperty(batchesArb, async (batches) => {
        await runFuzz(6, batches);
      }),
      { numRuns: 30 },
    );
  }, 120_000);
});
