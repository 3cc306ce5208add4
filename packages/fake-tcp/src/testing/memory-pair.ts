/**
 * An in-memory point-to-point link between two sets of device queues, for tests: packets
 * written on one side arrive on the same-index queue of the other side, in batches, on a later
 * microtask (never re-entrantly inside `write`). Hooks can inspect, drop, hold and reorder.
 */
import type { DeviceQueue, PacketBatch, PacketBatchHandler } from "../device.js";
import {
  finishChecksum,
  internetChecksum,
  ipv4PseudoBase,
  ipv6PseudoBase,
  pseudoHeaderSeed,
  sumWords,
} from "../wire/checksum.js";
import { maxSegmentedPayload } from "../wire/segment.js";

export interface MemoryPairOptions {
  /** MTU of every queue (default 1500). Larger writes are dropped (write returns false). */
  mtu?: number;
  /**
   * Advertise checksum offload (default false). Like a kernel, the link completes partial
   * checksums before delivery, so receivers always see valid checksums.
   */
  checksumOffload?: boolean;
  /** Queues per side (default 1). */
  queues?: number;
  /**
   * Advertise segmentation offload (default false; needs `checksumOffload`). Like a kernel,
   * the link splits each `writeSegmented` run into segments before they travel; a run whose
   * header is inconsistent (IP length, IPv4 header checksum or TCP checksum seed not
   * describing the whole run) is refused and counted in `badRuns`.
   */
  segmentationOffload?: boolean;
  /**
   * The most payload one `writeSegmented` call takes, for both families (default: what the
   * 16-bit IP length allows, `wire.maxSegmentedPayload`). A larger run throws, as on a TUN queue.
   */
  maxSegmentedPayload?: number;
}

/** One direction of the link, with its test hooks. */
export class MemoryLink {
  /** Called for every packet written in this direction (a copy; keep it if you like). */
  tap: ((packet: Buffer) => void) | null = null;
  /** Return false to drop the packet (counted in `dropped`). */
  filter: ((packet: Buffer) => boolean) | null = null;
  /** While true, packets are kept in `held` instead of delivered; see `release`. */
  holding = false;
  readonly held: Array<{ queue: number; packet: Buffer }> = [];
  /** Every packet written in this direction, when `capture` is true. */
  capture = false;
  readonly captured: Buffer[] = [];
  delivered = 0;
  dropped = 0;

  /** @internal */
  constructor(private readonly deliver: (queue: number, packet: Buffer) => void) {}

  /** @internal Entry point for packets written on the sending side. */
  accept(queue: number, packet: Buffer): void {
    this.tap?.(packet);
    if (this.capture) this.captured.push(packet);
    if (this.filter && !this.filter(packet)) {
      this.dropped++;
      return;
    }
    if (this.holding) {
      this.held.push({ queue, packet });
      return;
    }
    this.delivered++;
    this.deliver(queue, packet);
  }

  /**
   * Stops holding and delivers the held packets, in `order` (indices into `held`) or reversed
   * when `order` is "reverse", or as held.
   */
  release(order?: number[] | "reverse"): void {
    this.holding = false;
    const items = this.held.splice(0);
    const seq = order === "reverse" ? items.reverse() : order ? order.map((i) => items[i]) : items;
    for (const { queue, packet } of seq) {
      this.delivered++;
      this.deliver(queue, packet);
    }
  }
}

/** A DeviceQueue backed by memory. */
export class MemoryQueue implements DeviceQueue {
  readonly mtu: number;
  readonly checksumOffload: boolean;
  readonly segmentationOffload: boolean;
  /** Packets written by this queue and refused (too big or closed). */
  refused = 0;
  /** `writeSegmented` calls, and those refused for an inconsistent header. */
  segmentedWrites = 0;
  badRuns = 0;
  private handler: PacketBatchHandler | null = null;
  private pending: Buffer[] = [];
  private scheduled = false;
  private closed = false;

  /** @internal */
  constructor(
    mtu: number,
    checksumOffload: boolean,
    private readonly send: (packet: Buffer) => void,
    private readonly settleHook: (delta: number) => void,
    segmentationOffload = false,
    private readonly runLimit: number | undefined = undefined,
  ) {
    this.mtu = mtu;
    this.checksumOffload = checksumOffload;
    this.segmentationOffload = segmentationOffload && checksumOffload;
  }

  maxSegmentedPayload(family: 4 | 6): number {
    return this.runLimit ?? maxSegmentedPayload(family);
  }

  onReceive(handler: PacketBatchHandler): void {
    this.handler = handler;
  }

  write(packet: Uint8Array, partialChecksum = false): boolean {
    return this.writeGather(packet, new Uint8Array(0), partialChecksum);
  }

  writeGather(header: Uint8Array, payload: Uint8Array, partialChecksum = false): boolean {
    const length = header.length + payload.length;
    if (this.closed || length > this.mtu) {
      this.refused++;
      return false;
    }
    const packet = Buffer.allocUnsafe(length);
    packet.set(header, 0);
    packet.set(payload, header.length);
    if (partialChecksum) completeChecksum(packet);
    this.send(packet);
    return true;
  }

  writeSegmented(header: Uint8Array, payload: Uint8Array, segmentSize: number): boolean {
    if (!this.segmentationOffload) throw new Error("this memory queue has no segmentation offload");
    this.segmentedWrites++;
    const h = Buffer.from(header);
    const v4 = h[0] >>> 4 === 4;
    const ip = v4 ? 20 : 40;
    if (payload.length > this.maxSegmentedPayload(v4 ? 4 : 6))
      throw new RangeError(`a run of ${payload.length} bytes exceeds this memory queue's limit`);
    if (!runHeaderConsistent(h, ip, v4, payload.length) || segmentSize <= 0) {
      this.badRuns++;
      this.refused++;
      return false;
    }
    const seq = h.readUInt32BE(ip + 4);
    for (let at = 0; at < payload.length; at += segmentSize) {
      const part = payload.subarray(at, Math.min(at + segmentSize, payload.length));
      const tcpLength = 20 + part.length;
      if (v4) {
        h.writeUInt16BE(ip + tcpLength, 2);
        h.writeUInt16BE(0, 10);
        h.writeUInt16BE(internetChecksum(h, 0, 20), 10);
      } else h.writeUInt16BE(tcpLength, 4);
      h.writeUInt32BE((seq + at) >>> 0, ip + 4);
      h.writeUInt16BE(pseudoHeaderSeed(pseudoBaseOf(h, v4), tcpLength), ip + 16);
      if (!this.writeGather(h.subarray(0, ip + 20), part, true)) return false;
    }
    return true;
  }

  close(): void {
    this.closed = true;
    this.handler = null;
  }

  /** @internal Queues a packet for delivery to this queue's handler on a microtask. */
  enqueue(packet: Buffer): void {
    if (this.closed) return;
    this.pending.push(packet);
    if (this.scheduled) return;
    this.scheduled = true;
    this.settleHook(1);
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    this.settleHook(-1);
    const packets = this.pending;
    this.pending = [];
    if (!this.handler || packets.length === 0) return;
    this.handler(batchOf(packets));
  }
}

/** `packets` as one receive batch, as a device read hands them over (copied into one buffer). */
export function batchOf(packets: Buffer[]): PacketBatch {
  const offsets = new Uint32Array(2 * packets.length);
  let at = 0;
  packets.forEach((p, i) => {
    offsets[2 * i] = at;
    offsets[2 * i + 1] = p.length;
    at += p.length;
  });
  return { buffer: Buffer.concat(packets), offsets, count: packets.length };
}

function pseudoBaseOf(h: Buffer, v4: boolean): number {
  if (v4) return ipv4PseudoBase(h.readUInt32BE(12), h.readUInt32BE(16));
  const words = (at: number) => [0, 1, 2, 3].map((i) => h.readUInt32BE(at + 4 * i));
  return ipv6PseudoBase(words(8), words(24));
}

/** What a kernel relies on in a run's header: lengths, IPv4 checksum, TCP seed for the whole. */
function runHeaderConsistent(h: Buffer, ip: number, v4: boolean, payload: number): boolean {
  const tcpLength = 20 + payload;
  if (v4) {
    if (h.readUInt16BE(2) !== ip + tcpLength || internetChecksum(h, 0, 20) !== 0) return false;
  } else if (h.readUInt16BE(4) !== tcpLength) return false;
  return h.readUInt16BE(ip + 16) === pseudoHeaderSeed(pseudoBaseOf(h, v4), tcpLength);
}

/** Completes a TCP checksum whose field holds the pseudo-header seed, as a kernel would. */
function completeChecksum(packet: Buffer): void {
  const v4 = packet[0] >>> 4 === 4;
  const ip = v4 ? (packet[0] & 15) * 4 : 40;
  const sum = sumWords(packet, ip, packet.length - ip);
  packet.writeUInt16BE(finishChecksum(sum), ip + 16);
}

export interface MemoryPair {
  /** Side A's queues (give them to one stack) and side B's. */
  a: MemoryQueue[];
  b: MemoryQueue[];
  /** Hooks for packets travelling A -> B and B -> A. */
  aToB: MemoryLink;
  bToA: MemoryLink;
  /** Resolves once no delivery is pending (bounded: gives up after 10,000 rounds). */
  settle(): Promise<void>;
}

/** Creates a linked pair of in-memory devices. */
export function createMemoryPair(options: MemoryPairOptions = {}): MemoryPair {
  const mtu = options.mtu ?? 1500;
  const offload = options.checksumOffload ?? false;
  const segmentation = options.segmentationOffload ?? false;
  const runLimit = options.maxSegmentedPayload;
  const n = options.queues ?? 1;
  let inFlight = 0;
  const hook = (d: number) => {
    inFlight += d;
  };
  const a: MemoryQueue[] = [];
  const b: MemoryQueue[] = [];
  const aToB = new MemoryLink((q, p) => b[q].enqueue(p));
  const bToA = new MemoryLink((q, p) => a[q].enqueue(p));
  for (let i = 0; i < n; i++) {
    a.push(new MemoryQueue(mtu, offload, (p) => aToB.accept(i, p), hook, segmentation, runLimit));
    b.push(new MemoryQueue(mtu, offload, (p) => bToA.accept(i, p), hook, segmentation, runLimit));
  }
  const settle = async () => {
    for (let i = 0; i < 10_000 && inFlight > 0; i++) await new Promise<void>(queueMicrotask);
    // One more turn so that promise callbacks resolved by the last batch run too.
    await new Promise<void>(queueMicrotask);
  };
  return { a, b, aToB, bToA, settle };
}
