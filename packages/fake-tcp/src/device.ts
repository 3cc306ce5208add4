/**
 * The device contract between the stack and whatever moves IP packets for it.
 *
 * A TUN queue (package `fake-tcp-tun`) satisfies it structurally, and so does the in-memory
 * pair used by unit tests; the stack depends on neither.
 */

/**
 * A batch of received IP packets. Packet `i` occupies
 * `buffer[offsets[2 * i], offsets[2 * i] + offsets[2 * i + 1])`.
 *
 * The batch, its buffer and its offsets are valid only until the receive handler returns:
 * the device reuses them for the next batch. Copy anything that must outlive the call.
 */
export interface PacketBatch {
  readonly buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly count: number;
  /**
   * Present on devices with receive offload: per packet, 0, or the segment size of a TCP
   * packet the device handed over coalesced (its payload is consecutive segments of that
   * size, the last one possibly shorter, all under one header). Each segment is one datagram.
   */
  readonly segmentSizes?: Uint16Array;
}

export type PacketBatchHandler = (batch: PacketBatch) => void;

/** One queue of a packet device. All writes are synchronous: buffers may be reused on return. */
export interface DeviceQueue {
  /** Largest IP packet the device carries, in bytes. */
  readonly mtu: number;
  /**
   * True when writes may carry a transport checksum that holds only the pseudo-header seed
   * (`partialChecksum = true`): the kernel finishes it. False means every packet written must
   * carry a complete checksum.
   */
  readonly checksumOffload: boolean;
  /** Starts delivering received packets to `handler`, one call per batch. Replaces any earlier handler. */
  onReceive(handler: PacketBatchHandler): void;
  /** Writes one IP packet. Returns false when the packet was dropped (counted by the device). */
  write(packet: Uint8Array, partialChecksum?: boolean): boolean;
  /**
   * Writes `header` followed by `payload` as one IP packet in one system call, without
   * copying the payload. Returns false when dropped.
   */
  writeGather(header: Uint8Array, payload: Uint8Array, partialChecksum?: boolean): boolean;
  /**
   * True when the queue takes `writeSegmented`: one write carrying several consecutive TCP
   * segments under one header, which the kernel (or the hardware) splits.
   */
  readonly segmentationOffload?: boolean;
  /**
   * Writes `header` (IP + 20-byte TCP header describing the whole run: IP length covering all
   * of `payload`, TCP checksum field holding the pseudo-header seed for the whole TCP length)
   * followed by `payload`, the payloads of consecutive segments of `segmentSize` bytes each
   * (the last may be shorter), in one system call. The device emits one segment per
   * `segmentSize` bytes, sequence numbers advancing by the payload. Returns false when the
   * whole run was dropped. Only called when `segmentationOffload` is true.
   */
  writeSegmented?(header: Uint8Array, payload: Uint8Array, segmentSize: number): boolean;
  /**
   * The most `payload` bytes one `writeSegmented` call takes under a header of `family` (an
   * IP header without options and a 20-byte TCP header). The stack's runs never exceed it:
   * each device states its own limit. Only called when `segmentationOffload` is true.
   */
  maxSegmentedPayload?(family: 4 | 6): number;
  /** Stops receiving and releases the queue. Idempotent. */
  close(): void;
}
