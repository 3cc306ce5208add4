/**
 * fake-tcp-tun: Linux TUN devices for Node.js through a small Node-API addon. Multi-queue,
 * batched reads into a shared buffer, gather and batch writes, virtio-net checksum offload,
 * usable from worker_threads.
 *
 * @example
 * ```ts
 * const dev = TunDevice.open({ name: "tun0", ipv4: { local: "10.0.0.1", peer: "10.0.0.2" } });
 * dev.queues[0].onReceive((batch) => { ... });
 * ```
 */
export { TunDevice } from "./device.js";
export { type TunError, tunError } from "./errors.js";
export type { SteeringMode } from "./native.js";
export {
  DEFAULT_BATCH_SIZE,
  DEFAULT_TXQUEUELEN,
  MAX_NAME_BYTES,
  type PointToPoint,
  type TunDeviceOptions,
  type TunQueueOptions,
} from "./options.js";
export {
  MAX_SEGMENT_SIZE,
  MAX_SEGMENTED_PAYLOAD,
  MAX_SEGMENTED_PAYLOAD_V4,
  MAX_SEGMENTED_PAYLOAD_V6,
  type TunAttachOptions,
  type TunBatchHandler,
  type TunPacketBatch,
  TunQueue,
  type TunQueueStats,
  VNET_HDR_LEN,
} from "./queue.js";
export { setTimeSlice, yieldCore } from "./scheduling.js";
