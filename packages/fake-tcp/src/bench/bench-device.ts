/**
 * A device for benchmarks: writes are copied into a preallocated batch buffer (what a kernel
 * would do with the bytes) and handed to the other side's receive handler when the benchmark
 * calls `flush()`, so no delivery happens re-entrantly inside a write and nothing is allocated
 * per packet.
 */
import type { DeviceQueue, PacketBatch, PacketBatchHandler } from "../device.js";

export class BenchQueue implements DeviceQueue {
  readonly mtu: number;
  readonly checksumOffload: boolean;
  peer: BenchQueue | null = null;
  written = 0;
  private handler: PacketBatchHandler | null = null;
  private readonly buffer: Buffer;
  private readonly offsets: Uint32Array;
  private readonly batch: { buffer: Buffer; offsets: Uint32Array; count: number };
  private count = 0;
  private used = 0;
  private readonly maxBatch: number;

  constructor(mtu: number, checksumOffload: boolean, maxBatch = 64) {
    this.mtu = mtu;
    this.checksumOffload = checksumOffload;
    this.maxBatch = maxBatch;
    this.buffer = Buffer.alloc(maxBatch * mtu);
    this.offsets = new Uint32Array(2 * maxBatch);
    this.batch = { buffer: this.buffer, offsets: this.offsets, count: 0 };
  }

  onReceive(handler: PacketBatchHandler): void {
    this.handler = handler;
  }

  write(packet: Uint8Array): boolean {
    return this.writeGather(packet, packet.subarray(0, 0));
  }

  writeGather(header: Uint8Array, payload: Uint8Array): boolean {
    if (this.count === this.maxBatch) return false;
    const at = this.used;
    this.buffer.set(header, at);
    this.buffer.set(payload, at + header.length);
    const len = header.length + payload.length;
    this.offsets[2 * this.count] = at;
    this.offsets[2 * this.count + 1] = len;
    this.count++;
    this.used += len;
    this.written++;
    return true;
  }

  /** Delivers everything written so far to the peer's handler, as one batch. */
  flush(): void {
    if (this.count === 0) return;
    this.batch.count = this.count;
    this.count = 0;
    this.used = 0;
    this.peer?.handler?.(this.batch as PacketBatch);
  }

  /** The pending batch (for benchmarks that replay it), without delivering it. */
  pending(): PacketBatch {
    this.batch.count = this.count;
    return this.batch;
  }

  /** Forgets what was written without delivering it. */
  discard(): void {
    this.count = 0;
    this.used = 0;
  }

  /** Calls this queue's own receive handler with `batch` (decode-only measurements). */
  receive(batch: PacketBatch): void {
    this.handler?.(batch);
  }

  close(): void {
    this.handler = null;
  }
}

/** Two benchmark queues joined back to back. */
export function benchPair(mtu: number, checksumOffload: boolean): [BenchQueue, BenchQueue] {
  const a = new BenchQueue(mtu, checksumOffload);
  const b = new BenchQueue(mtu, checksumOffload);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
