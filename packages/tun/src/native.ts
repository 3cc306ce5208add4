/**
 * Loads the compiled Node-API addon (`build/Release/tun.node`) and types its surface. The
 * addon is built from source by `pnpm run build:native`; this module only finds it.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NfQueueStats } from "./nfqueue.js";
import type { TunQueueStats } from "./queue.js";
import type { UdpBatchSocketStats } from "./udp-socket.js";

/**
 * What every polled object of the addon has (polled.c): its fd, the batch handler, whether it
 * keeps the thread alive, its counters by name (the TS stats interface `S`) and close.
 */
export interface NativePolled<S> {
  /** The fd, or -1 once closed. */
  readonly fd: number;
  /** The handler is called with itself as `this` (an arrow function ignores it). */
  start(handler: (count: number) => void): void;
  ref(keep: boolean): void;
  stats(): S;
  close(): void;
}

/** One open queue fd in the addon: its read loop, writers and counters. */
export interface NativeQueue extends NativePolled<TunQueueStats> {
  /** The shared read buffer (one per queue, reused by every batch). */
  readonly readBuffer: ArrayBuffer;
  /** The shared start/len pairs of the current batch. */
  readonly readOffsets: ArrayBuffer;
  /** Receive offload only: the shared segment size (u16, 0 = not coalesced) per packet. */
  readonly readSegmentSizes?: ArrayBuffer;
  write(packet: Uint8Array, partialChecksum: boolean): boolean;
  writeGather(header: Uint8Array, payload: Uint8Array, partialChecksum: boolean): boolean;
  writeBatch(
    buffer: Uint8Array,
    offsets: Uint32Array,
    count: number,
    partialChecksum: boolean,
  ): number;
  writeSegmented(header: Uint8Array, payload: Uint8Array, segmentSize: number): boolean;
}

/** One UDP socket in the addon: recvmmsg reader, synchronous senders, counters. */
/**
 * The receive buffers several NativeUdp of one thread may share (see UdpReceiveArea): the
 * datagram slots, start/len pairs, source and destination records, and `scratch`, the
 * addon's own per-slot bookkeeping (message headers, source addresses, control space).
 */
export interface NativeUdpArea {
  readonly buffer: ArrayBuffer;
  readonly offsets: ArrayBuffer;
  readonly addresses: ArrayBuffer;
  readonly destinations: ArrayBuffer;
  readonly scratch: ArrayBuffer;
}

export interface NativeUdp extends NativePolled<UdpBatchSocketStats> {
  /** Shared receive buffer: datagram slot i starts at i * slotSize. */
  readonly readBuffer: ArrayBuffer;
  /** Shared start/len pairs of the current batch. */
  readonly readOffsets: ArrayBuffer;
  /** Shared source address records of the current batch (ADDRESS_RECORD_BYTES each). */
  readonly readAddresses: ArrayBuffer;
  /** Shared destination address records of the current batch (with packetInfo). */
  readonly readDestinations: ArrayBuffer;
  bind(
    address: string,
    port: number,
    reusePort: boolean,
    recvBufferBytes: number,
    sendBufferBytes: number,
    packetInfo: boolean,
  ): void;
  connect(address: string, port: number): void;
  localAddress(): { address: string; port: number; family: 4 | 6 };
  send(
    buffer: Uint8Array,
    offset: number,
    length: number,
    address?: string | Uint8Array | null,
    portOrRecordIndex?: number,
    sourceRecords?: Uint8Array | null,
    sourceIndex?: number,
  ): boolean;
  sendBatch(
    buffer: Uint8Array,
    offsets: Uint32Array,
    count: number,
    records?: Uint8Array | null,
    sourceRecords?: Uint8Array | null,
  ): number;
  sendSegmented(
    buffer: Uint8Array,
    offset: number,
    length: number,
    segmentSize: number,
    address?: string | Uint8Array | null,
    portOrRecordIndex?: number,
    sourceRecords?: Uint8Array | null,
    sourceIndex?: number,
  ): boolean;
  /** False once the kernel refused UDP_SEGMENT on this socket (sends go one by one). */
  readonly segmentationOffload: boolean;
}

/** One bound netfilter queue in the addon: recvmmsg reader, batched verdicts, counters. */
export interface NativeNfQueue extends NativePolled<NfQueueStats> {
  /** Shared receive buffer: one datagram slot per packet. */
  readonly readBuffer: ArrayBuffer;
  /** Shared per-packet metadata, 8 u32 each: start, length, id, mark, family | hook << 8,
   *  input ifindex, full length, output ifindex. */
  readonly readMeta: ArrayBuffer;
  /** Shared per-packet decisions, 2 u32 each: code (0 accept, 1 accept+mark, 2 drop,
   *  3 defer), mark. Reset to accept before each batch; read when the handler returns. */
  readonly decisions: ArrayBuffer;
  /** Answers a deferred packet (or one of the batch being handled). */
  verdict(id: number, code: number, mark: number): boolean;
}

/** The addon's exports. */
export interface NativeAddon {
  NativeQueue: new (
    fd: number,
    vnetHdr: boolean,
    slotSize: number,
    batchSize: number,
    receiveOffload: boolean,
  ) => NativeQueue;
  openQueue(
    devicePath: string,
    name: string,
    multiQueue: boolean,
    vnetHdr: boolean,
    exclusive: boolean,
    receiveOffload: boolean,
  ): { fd: number; name: string };
  /** Whether device `name` (in this network namespace) has TSO on: opened with receiveOffload. */
  deviceReceiveOffload(name: string): boolean;
  queueInfo(fd: number): { name: string; flags: number };
  dupFd(fd: number): number;
  closeFd(fd: number): void;
  setMtu(name: string, mtu: number): void;
  getMtu(name: string): number;
  setTxQueueLen(name: string, length: number): void;
  setUp(name: string, up: 0 | 1): void;
  /** Attaches ("port-sum") or detaches (null) the device-wide eBPF steering program via `fd`. */
  setSteering(fd: number, mode: SteeringMode | null): void;
  /** null when the steering program loads here, else why not. */
  steeringProbe(): { code: string; message: string } | null;
  /** sched_yield() for the calling thread (see scheduling.ts). */
  yieldCore(): void;
  setTimeSlice(ns: number): number;
  NativeUdp: new (
    family: 4 | 6,
    slotSize: number,
    batchSize: number,
    area?: NativeUdpArea,
  ) => NativeUdp;
  /** A fresh address record (see udp-batch.ts for the layout) for `address`:`port`. */
  encodeUdpAddress(address: string, port: number): Uint8Array;
  NativeNfQueue: new (
    queue: number,
    copyRange: number,
    maxLength: number,
    batchSize: number,
    failOpen: boolean,
    recvBufferBytes: number,
  ) => NativeNfQueue;
}

/** Queue steering programs the addon can attach to a multi-queue TUN device. */
export type SteeringMode = "port-sum";

/** Linux TUN flag bits (from linux/if_tun.h) that this package reads back. */
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_VNET_HDR = 0x4000;

/** `linux-x64-glibc`: the directory of `prebuilds/` whose addon fits this machine. */
export function prebuildTarget(): string {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } })
    ?.header;
  const libc = header?.glibcVersionRuntime ? "-glibc" : "";
  return `${process.platform}-${process.arch}${libc}`;
}

function loadAddon(): NativeAddon {
  // src/ and dist/ are siblings of build/ and prebuilds/, so the same relative paths work from
  // both. A local build wins over the addon shipped in the package.
  const here = dirname(fileURLToPath(import.meta.url));
  const built = join(here, "..", "build", "Release", "tun.node");
  if (existsSync(built)) return createRequire(import.meta.url)(built) as NativeAddon;
  // Only now: the process report that tells glibc from musl takes a few milliseconds.
  const shipped = join(here, "..", "prebuilds", prebuildTarget(), "tun.node");
  const path = existsSync(shipped) ? shipped : undefined;
  if (path === undefined) {
    throw new Error(
      `the fake-tcp-tun native addon is missing (no ${built}, no prebuilt ${shipped}): build it with \`npm rebuild fake-tcp-tun\` (needs python3, make and a C compiler), or \`pnpm run build\` in the repository`,
    );
  }
  return createRequire(import.meta.url)(path) as NativeAddon;
}

/** The addon, loaded once per thread on first import. */
export const addon: NativeAddon = loadAddon();
