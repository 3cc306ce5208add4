/**
 * One queue of a TUN device: a non-blocking fd polled on the calling thread's event loop.
 * Satisfies the `DeviceQueue` contract of `fake-tcp` structurally.
 */
import { readFileSync } from "node:fs";
import { explainOpenError, tunError } from "./errors.js";
import {
  addon,
  IFF_MULTI_QUEUE,
  IFF_VNET_HDR,
  type NativeQueue,
  type SteeringMode,
} from "./native.js";
import {
  DEFAULT_BATCH_SIZE,
  DEFAULT_DEVICE_PATH,
  type TunQueueOptions,
  validateBatchSize,
  validateName,
  validateReceiveOffload,
  validateSteering,
} from "./options.js";
import { PolledHandle } from "./polled.js";

/** Length of the virtio_net_hdr that precedes every packet on a vnetHdr queue. */
export const VNET_HDR_LEN = 10;

/**
 * Largest `payload` of one {@link TunQueue.writeSegmented} call with a 20-byte IPv4 header and a
 * 20-byte TCP header: the IPv4 total length (16 bits) counts both headers, 65535 - 40.
 * IP or TCP options lower it by their length.
 */
export const MAX_SEGMENTED_PAYLOAD_V4 = 65_495;
/**
 * Largest `payload` of one {@link TunQueue.writeSegmented} call with an IPv6 header and a 20-byte
 * TCP header: the IPv6 payload length (16 bits) counts only the TCP header, 65535 - 20.
 */
export const MAX_SEGMENTED_PAYLOAD_V6 = 65_515;
/** Largest payload per {@link TunQueue.writeSegmented} call that fits either IP version. */
export const MAX_SEGMENTED_PAYLOAD = MAX_SEGMENTED_PAYLOAD_V4;
/** Largest `segmentSize` (the virtio gso_size is 16 bits; 0xFFFF is reserved by the kernel). */
export const MAX_SEGMENT_SIZE = 65_534;

/**
 * A batch of received IP packets: packet `i` occupies
 * `buffer[offsets[2 * i], offsets[2 * i] + offsets[2 * i + 1])` (any virtio header already
 * skipped).
 *
 * The buffer and offsets are shared with the addon and reused for every batch: a batch is
 * valid only until the handler returns. Copy anything that must outlive the call.
 */
export interface TunPacketBatch {
  readonly buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly count: number;
  /**
   * Only on receiveOffload queues: `segmentSizes[i]` is 0 for an ordinary packet, else packet
   * `i` is a coalesced TCP packet (IP length covering all its payload, checksum partial) that
   * stands for segments of this many payload bytes each (the virtio gso_size).
   */
  readonly segmentSizes?: Uint16Array;
}

/** Called once per batch of received packets. */
export type TunBatchHandler = (batch: TunPacketBatch) => void;

/** Counters of one queue, since it was opened. */
export interface TunQueueStats {
  /** IP packets delivered to the receive handler. */
  packetsRead: number;
  /** Bytes of those packets (virtio headers excluded). */
  bytesRead: number;
  /** IP packets accepted by the kernel. */
  packetsWritten: number;
  /** Bytes of those packets (virtio headers excluded). */
  bytesWritten: number;
  /** Writes that failed (EAGAIN/ENOBUFS, malformed or closed) and were dropped. */
  writeDrops: number;
  /** Calls of the receive handler (one per wake-up that found packets). */
  readBatches: number;
  /**
   * Read failures other than "nothing to read" (e.g. the device was deleted). Reading stops
   * after one, instead of spinning on an fd that stays in error.
   */
  readErrors: number;
  /** {@link TunQueue.writeSegmented} calls that the kernel cut into more than one segment. */
  segmentedWrites: number;
  /**
   * Packets read but not delivered: larger than the read buffer allows (the MTU grew after the
   * queue was opened, or a coalesced packet on a queue opened without receiveOffload), or
   * coalesced with a type other than TCP.
   */
  readDrops: number;
  /** Coalesced TCP packets delivered (receiveOffload; each counts once in packetsRead). */
  coalescedReads: number;
}

/** Options of {@link TunQueue.attach}. */
export interface TunAttachOptions extends TunQueueOptions {
  /** The TUN clone device (default "/dev/net/tun"). */
  devicePath?: string;
}

/** Reads a device's TUN flags from sysfs, or null when the device does not exist here. */
function deviceTunFlags(name: string): number | null {
  try {
    return Number.parseInt(readFileSync(`/sys/class/net/${name}/tun_flags`, "utf8").trim(), 16);
  } catch {
    return null;
  }
}

/**
 * One queue of a TUN device. Reads arrive in batches through {@link TunQueue.onReceive};
 * writes are synchronous single system calls, so buffers may be reused as soon as they return.
 *
 * A queue belongs to the thread that opened it (its fd is polled on that thread's event
 * loop). To use a device from a worker, attach a new queue inside the worker with
 * {@link TunQueue.attach}. The device disappears when its last queue (in any thread or
 * process) is closed.
 */
export class TunQueue extends PolledHandle<TunQueueStats> {
  /** Name of the TUN interface this queue belongs to. */
  readonly name: string;
  /** Largest IP packet the device carries, in bytes (its MTU when the queue was opened). */
  readonly mtu: number;
  /**
   * True on vnetHdr queues: writes may pass `partialChecksum = true` with a transport
   * checksum holding only the pseudo-header seed, and the kernel completes it.
   */
  readonly checksumOffload: boolean;
  /**
   * True on vnetHdr queues: {@link writeSegmented} hands the kernel one TCP super-packet that
   * it cuts into segments (virtio GSO).
   */
  readonly segmentationOffload: boolean;
  /**
   * True when the kernel may hand this queue coalesced TCP packets (see
   * `TunQueueOptions.receiveOffload` and {@link TunPacketBatch.segmentSizes}).
   */
  readonly receiveOffload: boolean;
  /** Most packets delivered per handler call. */
  readonly batchSize: number;
  readonly #native: NativeQueue;
  readonly #batch: {
    buffer: Buffer;
    offsets: Uint32Array;
    count: number;
    segmentSizes?: Uint16Array;
  };

  /** @internal Use `TunDevice.open`, {@link TunQueue.attach} or {@link TunQueue.fromFd}. */
  constructor(
    fd: number,
    name: string,
    mtu: number,
    vnetHdr: boolean,
    batchSize: number,
    receiveOffload = false,
  ) {
    // One slot fits the largest packet the kernel can hand us plus its virtio header. With
    // receive offload the addon adds room for one 64 KiB read at the end of the buffer.
    const slot = Math.max(mtu, 576) + (vnetHdr ? VNET_HDR_LEN : 0);
    const native = new addon.NativeQueue(fd, vnetHdr, slot, batchSize, receiveOffload);
    super(native);
    this.#native = native;
    this.name = name;
    this.mtu = mtu;
    this.checksumOffload = vnetHdr;
    this.segmentationOffload = vnetHdr;
    this.receiveOffload = receiveOffload;
    this.batchSize = batchSize;
    const sizes = this.#native.readSegmentSizes;
    this.#batch = {
      buffer: Buffer.from(this.#native.readBuffer),
      offsets: new Uint32Array(this.#native.readOffsets),
      count: 0,
      ...(sizes ? { segmentSizes: new Uint16Array(sizes) } : {}),
    };
  }

  /**
   * Opens another queue of an existing multi-queue device `name` in this thread (opens the
   * clone device again with the same name and IFF_MULTI_QUEUE), e.g. inside a worker_thread.
   * `vnetHdr` defaults to the device's current mode; asking for the other mode is an error
   * because the kernel would switch every queue of the device.
   */
  static attach(name: string, opts: TunAttachOptions = {}): TunQueue {
    validateName(name);
    const batchSize = opts.batchSize ?? DEFAULT_BATCH_SIZE;
    validateBatchSize(batchSize);
    const flags = deviceTunFlags(name);
    if (flags === null)
      throw tunError(
        "ENODEV",
        `cannot attach to TUN device "${name}": no such TUN device in this network namespace (open it first with TunDevice.open)`,
      );
    if ((flags & IFF_MULTI_QUEUE) === 0)
      throw tunError(
        "EINVAL",
        `cannot attach to TUN device "${name}": it was not opened as multi-queue (open it with queues > 1 or multiQueue: true)`,
      );
    const deviceVnet = (flags & IFF_VNET_HDR) !== 0;
    if (opts.vnetHdr !== undefined && opts.vnetHdr !== deviceVnet)
      throw tunError(
        "EINVAL",
        `cannot attach to TUN device "${name}" with vnetHdr ${opts.vnetHdr}: the device uses vnetHdr ${deviceVnet} and all its queues share that mode`,
      );
    // Opening a queue sets the device-wide offload flags again: keep the device's own.
    const deviceOffload = deviceVnet && addon.deviceReceiveOffload(name);
    if (opts.receiveOffload !== undefined && opts.receiveOffload !== deviceOffload)
      throw tunError(
        "EINVAL",
        `cannot attach to TUN device "${name}" with receiveOffload ${opts.receiveOffload}: the device uses receiveOffload ${deviceOffload} and all its queues share that mode`,
      );
    const devicePath = opts.devicePath ?? DEFAULT_DEVICE_PATH;
    let fd: number;
    try {
      fd = addon.openQueue(devicePath, name, true, deviceVnet, false, deviceOffload).fd;
    } catch (error) {
      throw explainOpenError(error, name, devicePath);
    }
    try {
      return new TunQueue(fd, name, addon.getMtu(name), deviceVnet, batchSize, deviceOffload);
    } catch (error) {
      addon.closeFd(fd);
      throw error;
    }
  }

  /**
   * Wraps a queue fd opened elsewhere (e.g. by another process or thread). The fd is
   * duplicated: the caller keeps ownership of `fd` and closes it when it likes. The vnetHdr
   * mode is read from the fd itself.
   */
  static fromFd(fd: number, opts: TunQueueOptions = {}): TunQueue {
    const batchSize = opts.batchSize ?? DEFAULT_BATCH_SIZE;
    validateBatchSize(batchSize);
    const info = addon.queueInfo(fd);
    const vnetHdr = (info.flags & IFF_VNET_HDR) !== 0;
    if (opts.vnetHdr !== undefined && opts.vnetHdr !== vnetHdr)
      throw tunError(
        "EINVAL",
        `fd ${fd} is ${vnetHdr ? "" : "not "}a vnetHdr queue, but vnetHdr ${opts.vnetHdr} was requested`,
      );
    validateReceiveOffload(opts, vnetHdr);
    let mtu = 1500;
    let deviceOffload: boolean | null = null;
    try {
      mtu = addon.getMtu(info.name);
      deviceOffload = vnetHdr && addon.deviceReceiveOffload(info.name);
    } catch {
      // The device may live in another network namespace: keep the common default MTU and
      // the caller's word on receive offload.
    }
    if (
      deviceOffload !== null &&
      opts.receiveOffload !== undefined &&
      opts.receiveOffload !== deviceOffload
    )
      throw tunError(
        "EINVAL",
        `fd ${fd} belongs to a device with receiveOffload ${deviceOffload}, but receiveOffload ${opts.receiveOffload} was requested`,
      );
    const receiveOffload = deviceOffload ?? opts.receiveOffload ?? false;
    const copy = addon.dupFd(fd);
    try {
      return new TunQueue(copy, info.name, mtu, vnetHdr, batchSize, receiveOffload);
    } catch (error) {
      addon.closeFd(copy);
      throw error;
    }
  }

  /**
   * Starts delivering received packets to `handler`, one call per batch (at most
   * `batchSize` packets, drained in one wake-up). Replaces any earlier handler. The batch is
   * valid only until the handler returns. With vnetHdr the virtio header is already skipped;
   * packets may carry unfinished (partial) checksums, which is normal under TUN_F_CSUM. With
   * receiveOffload a packet may be a coalesced TCP packet (see
   * {@link TunPacketBatch.segmentSizes}); a batch then ends early once less than 64 KiB of
   * buffer is left, so it may hold fewer than `batchSize` packets.
   *
   * While a handler is installed the queue keeps the event loop alive (see {@link unref}).
   */
  onReceive(handler: TunBatchHandler): void {
    const batch = this.#batch;
    this.#native.start((count: number) => {
      batch.count = count;
      handler(batch);
    });
  }

  /**
   * Writes one IP packet. With `partialChecksum` (vnetHdr queues only) the TCP/UDP checksum
   * field holds just the pseudo-header seed and the kernel completes it. Returns false when
   * the packet was dropped (queue full, malformed, closed): counted, never thrown.
   *
   * @throws when `partialChecksum` is requested on a queue without checksum offload.
   */
  write(packet: Uint8Array, partialChecksum = false): boolean {
    return this.#native.write(packet, partialChecksum);
  }

  /**
   * Writes `header` followed by `payload` as one IP packet in one writev system call; the two
   * are never copied together. Returns false when dropped.
   */
  writeGather(header: Uint8Array, payload: Uint8Array, partialChecksum = false): boolean {
    return this.#native.writeGather(header, payload, partialChecksum);
  }

  /**
   * Writes one TCP "super-packet" that the kernel cuts into segments, in one writev system call
   * (virtio GSO; vnetHdr queues only, see {@link segmentationOffload}).
   *
   * `header` is an IPv4 (no fragmentation) or IPv6 (no extension headers) header followed by a
   * TCP header, describing the whole super-packet: the IPv4 total length / IPv6 payload length
   * covers all of `payload`, the IPv4 header checksum is valid for that, and the TCP checksum
   * field holds the folded, not complemented pseudo-header sum for the whole TCP length (as for
   * `partialChecksum` writes). `payload` is the payloads of consecutive segments back to back:
   * each `segmentSize` bytes, the last one possibly shorter. The kernel copies the header in
   * front of every segment, advances the sequence number by the payload before it, completes
   * IPv4 lengths, header checksums and IDs (consecutive from the one given) and every TCP
   * checksum; FIN and PSH stay on the last segment only. A payload of at most `segmentSize` is
   * an ordinary partial-checksum write.
   *
   * Counters count the segments and their bytes, as if they had been written one by one.
   * Returns false when dropped (queue full, closed, or a header that does not match the
   * payload length / is not TCP): one drop per call.
   *
   * @throws ERR_TUN_NO_SEGMENTATION_OFFLOAD on a queue without vnetHdr; ERR_OUT_OF_RANGE when
   * `segmentSize` is not 1..{@link MAX_SEGMENT_SIZE} or the payload exceeds
   * {@link MAX_SEGMENTED_PAYLOAD_V4} / {@link MAX_SEGMENTED_PAYLOAD_V6}.
   */
  writeSegmented(header: Uint8Array, payload: Uint8Array, segmentSize: number): boolean {
    return this.#native.writeSegmented(header, payload, segmentSize);
  }

  /**
   * The most `payload` one {@link writeSegmented} call takes under a header of `family` (no IP
   * options, a 20-byte TCP header): {@link MAX_SEGMENTED_PAYLOAD_V4} or
   * {@link MAX_SEGMENTED_PAYLOAD_V6}. A stack on this queue sizes its runs by it.
   */
  maxSegmentedPayload(family: 4 | 6): number {
    return family === 4 ? MAX_SEGMENTED_PAYLOAD_V4 : MAX_SEGMENTED_PAYLOAD_V6;
  }

  /**
   * Writes `count` packets laid out like a received batch (packet `i` at
   * `buffer[offsets[2i], offsets[2i] + offsets[2i+1])`) in one call into the addon. Returns how
   * many were written; the rest were dropped and counted.
   */
  writeBatch(
    buffer: Uint8Array,
    offsets: Uint32Array,
    count: number,
    partialChecksum = false,
  ): number {
    return this.#native.writeBatch(buffer, offsets, count, partialChecksum);
  }

  /**
   * Sets the eBPF queue steering of the whole device this queue belongs to ("port-sum": a
   * packet goes to queue ((sport + dport) mod 2^16) % queues: the kernel keeps the result in 16 bits), or removes it (null: back to the kernel's
   * flow hash). Works from any queue, in any thread.
   *
   * @throws a TunError with the errno name in `code`: EPERM (no CAP_BPF/CAP_SYS_ADMIN), EINVAL
   * (verifier rejection, with its log; or a kernel without TUNSETSTEERINGEBPF), EBADF (closed).
   */
  setSteering(mode: SteeringMode | null): void {
    if (mode !== null) validateSteering(mode);
    if (this.fd < 0)
      throw tunError("EBADF", `cannot set steering on ${this.name}: the queue is closed`);
    try {
      addon.setSteering(this.fd, mode);
    } catch (error) {
      const code = (error as { code?: string }).code ?? "EUNKNOWN";
      throw tunError(code, `TUN device ${this.name}: ${(error as Error).message}`, error);
    }
  }
}
