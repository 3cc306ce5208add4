/**
 * What the receive-path tests (the fuzzers above all) share: the pool of peer addresses the
 * segments come from, tuple keys for bookkeeping, synchronous batch delivery, and byte-level
 * mangling.
 */
import fc from "fast-check";
import type { PacketBatch } from "../src/index.js";
import { batchOf } from "../src/testing/memory-pair.js";
import { parseIpv4, parseIpv6 } from "../src/wire/index.js";
import { CLIENT6, PEER4, SERVER4, SERVER6 } from "./helpers.js";

/** The real one, taken before any test fakes the timers. */
const realSetImmediate = globalThis.setImmediate;
/**
 * Lets every pending microtask run, as happens between two reads of a real device (each read
 * is its own task): the program's `accept()` continuation runs before the next batch arrives.
 */
export const nextTask = () => new Promise<void>((resolve) => realSetImmediate(resolve));

export const u32Arb = fc.integer({ min: 0, max: 0xffffffff });

/** Three peer sources (two next to the peer's address, one elsewhere) and the stack's address. */
export function fuzzAddresses(family: 4 | 6) {
  const sources =
    family === 4
      ? [parseIpv4(PEER4)!, parseIpv4("192.168.200.3")!, parseIpv4("10.9.9.9")!]
      : [parseIpv6(CLIENT6)!, parseIpv6("fcc8::3")!, parseIpv6("fd00:9::9")!];
  const stackAddr = family === 4 ? parseIpv4(SERVER4)! : parseIpv6(SERVER6)!;
  return { sources, stackAddr };
}

/** "address/port", the address as an unsigned number (IPv4) or its four words joined (IPv6). */
export function tupleKey(addr: number | ArrayLike<number>, port: number): string {
  const a =
    typeof addr === "number" ? String(addr >>> 0) : Array.from(addr, (w) => w >>> 0).join(":");
  return `${a}/${port}`;
}

/**
 * Hands `batch` straight to the receive handler the stack registered on `queue` (an in-memory
 * pair's queue), synchronously, so that a throw in the receive path fails the test right there.
 */
export function deliverBatch(queue: object, batch: PacketBatch): void {
  const handler = (queue as { handler: ((b: PacketBatch) => void) | null }).handler;
  if (handler === null) throw new Error("no receive handler on the queue");
  handler(batch);
}

/** {@link deliverBatch} of `packets` as one receive batch. */
export function deliver(queue: object, packets: Buffer[]): void {
  deliverBatch(queue, batchOf(packets));
}

/**
 * {@link deliverBatch} of one coalesced `packet`, as a device with receive offload hands it
 * over: its payload is to be cut into `segmentSize`-byte segments.
 */
export function deliverCoalesced(queue: object, packet: Buffer, segmentSize: number): void {
  deliverBatch(queue, {
    buffer: packet,
    offsets: Uint32Array.of(0, packet.length),
    count: 1,
    segmentSizes: Uint16Array.of(segmentSize),
  });
}

/** A copy of `pkt` with bytes overwritten (`[at, value]`, `at` wrapped) and `cut` bytes taken off its end. */
export function garble(pkt: Buffer, flips: ReadonlyArray<[number, number]>, cut = 0): Buffer {
  let out = Buffer.from(pkt);
  for (const [at, v] of flips) out[at % out.length] = v;
  if (cut > 0) out = out.subarray(0, out.length - Math.min(cut, out.length));
  return out;
}
