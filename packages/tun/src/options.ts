/**
 * Option types of the public API and their validation. Validation happens before anything is
 * opened, so a bad option never leaves a half-configured device behind.
 */
import { isIPv4, isIPv6 } from "node:net";
import { tunError } from "./errors.js";
import type { SteeringMode } from "./native.js";

/** A point-to-point address pair: this host's end and the peer's end of the TUN link. */
export interface PointToPoint {
  /** Address of this host on the TUN interface. */
  local: string;
  /** Address of the other end (the userspace side); the kernel routes it into the TUN. */
  peer: string;
}

/** Per-queue options (shared by {@link TunDeviceOptions}, `TunQueue.attach`, `TunQueue.fromFd`). */
export interface TunQueueOptions {
  /**
   * Use IFF_VNET_HDR with checksum offload (TUN_F_CSUM; TSO only with `receiveOffload`, never
   * USO): writes may carry partial checksums that the kernel completes, and reads may carry
   * unfinished ones; `writeSegmented` becomes available. For `attach`, defaults to the mode the
   * device already has.
   */
  vnetHdr?: boolean;
  /**
   * Receive offload (needs `vnetHdr`): TUNSETOFFLOAD also gets TUN_F_TSO4 | TUN_F_TSO6, so the
   * kernel may hand over a TCP packet of up to 64 KiB that it would otherwise have cut into
   * MTU-sized segments (its own TSO output, or GRO-merged forwarded traffic). Such a packet
   * has a non-zero `batch.segmentSizes[i]`: the segment size the kernel would have used.
   * Default false.
   *
   * The mode belongs to the whole device, like `vnetHdr`: `TunQueue.attach` reads it back from
   * the device (its TSO feature) and refuses a different explicit value; `TunQueue.fromFd` does
   * the same when the device is in this network namespace, and otherwise takes this option
   * as given (default false: a coalesced packet then does not fit the read buffer and is
   * dropped and counted in `readDrops`).
   */
  receiveOffload?: boolean;
  /** Most packets delivered per receive call (default 64). 1 means one packet per wake-up. */
  batchSize?: number;
}

/** Options of `TunDevice.open`. */
export interface TunDeviceOptions extends TunQueueOptions {
  /** Interface name (at most 15 bytes). Omitted: the kernel picks "tun%d". */
  name?: string;
  /** Number of queues (default 1). More than one uses IFF_MULTI_QUEUE. */
  queues?: number;
  /**
   * Create the device with IFF_MULTI_QUEUE even with one queue, so that more queues can be
   * attached later (e.g. from a worker with `TunQueue.attach`). Default: `queues > 1`.
   */
  multiQueue?: boolean;
  /** MTU in bytes (68..65535; 1280 or more with IPv6). Omitted: the kernel default (1500). */
  mtu?: number;
  /**
   * Kernel transmit queue length in packets (default 10000). The kernel default of 500 drops
   * bursts silently when the reader is briefly late.
   */
  txqueuelen?: number;
  /** IPv4 point-to-point addresses (`ip addr add LOCAL peer PEER dev NAME`). */
  ipv4?: PointToPoint;
  /** IPv6 point-to-point addresses (`ip -6 addr add LOCAL peer PEER dev NAME`). */
  ipv6?: PointToPoint;
  /** Bring the link up (default true). */
  up?: boolean;
  /** The TUN clone device (default "/dev/net/tun"); overridable for tests and odd setups. */
  devicePath?: string;
  /**
   * Deterministic queue steering (needs a multi-queue device): with "port-sum" the kernel
   * hands a packet to queue (source port + destination port) % queues, read from the TCP/UDP
   * header of IPv4 (at IHL*4) or IPv6 (at 40) packets; anything else goes to queue 0. Applies
   * to the whole device, including queues attached later. Throws (nothing left open) when the
   * kernel refuses; check `TunDevice.steeringUnavailableReason()` first to fall back.
   */
  steering?: SteeringMode | null;
}

/** Defaults applied by `TunDevice.open`. */
export const DEFAULT_BATCH_SIZE = 64;
export const DEFAULT_TXQUEUELEN = 10_000;
export const DEFAULT_DEVICE_PATH = "/dev/net/tun";
/** Linux IFNAMSIZ - 1: the longest interface name. */
export const MAX_NAME_BYTES = 15;
const MAX_QUEUES = 256;

function integerIn(value: unknown, min: number, max: number): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

/** Checks an interface name; throws ENAMETOOLONG / EINVAL with the reason. */
export function validateName(name: string): void {
  if (typeof name !== "string" || name.length === 0)
    throw tunError("EINVAL", "TUN name must be a non-empty string (or omitted)");
  if (Buffer.byteLength(name) > MAX_NAME_BYTES)
    throw tunError(
      "ENAMETOOLONG",
      `TUN name "${name}" is too long: ${Buffer.byteLength(name)} bytes, Linux allows at most ${MAX_NAME_BYTES}`,
    );
  if (name === "." || name === ".." || /[\s/:]/.test(name))
    throw tunError(
      "EINVAL",
      `TUN name "${name}" is not a valid interface name (no spaces, '/' or ':')`,
    );
}

/** Checks a batch size (1..4096). */
export function validateBatchSize(batchSize: number): void {
  if (!integerIn(batchSize, 1, 4096))
    throw tunError("ERANGE", `batchSize ${batchSize} must be an integer from 1 to 4096`);
}

function validatePair(pair: PointToPoint, family: 4 | 6): void {
  const valid = family === 4 ? isIPv4 : isIPv6;
  for (const key of ["local", "peer"] as const) {
    const value = pair?.[key];
    if (typeof value !== "string" || !valid(value))
      throw tunError(
        "EINVAL",
        `bad IPv${family} ${key} address ${JSON.stringify(value)}: expected a plain IPv${family} address without prefix length`,
      );
  }
  if (pair.local === pair.peer)
    throw tunError("EINVAL", `bad IPv${family} addresses: local and peer are both ${pair.local}`);
}

/** Checks every option of `TunDevice.open`; throws a TunError naming the bad one. */
export function validateDeviceOptions(opts: TunDeviceOptions): void {
  if (opts.name !== undefined) validateName(opts.name);
  if (opts.queues !== undefined && !integerIn(opts.queues, 1, MAX_QUEUES))
    throw tunError("ERANGE", `queues ${opts.queues} must be an integer from 1 to ${MAX_QUEUES}`);
  if (opts.mtu !== undefined) {
    const min = opts.ipv6 ? 1280 : 68;
    if (!integerIn(opts.mtu, min, 65535))
      throw tunError(
        "EINVAL",
        `bad MTU ${opts.mtu}: must be an integer from ${min} to 65535${opts.ipv6 ? " (IPv6 needs at least 1280)" : ""}`,
      );
  }
  if (opts.txqueuelen !== undefined && !integerIn(opts.txqueuelen, 1, 1_000_000))
    throw tunError("ERANGE", `txqueuelen ${opts.txqueuelen} must be an integer from 1 to 1000000`);
  if (opts.batchSize !== undefined) validateBatchSize(opts.batchSize);
  validateReceiveOffload(opts);
  if (opts.steering !== undefined && opts.steering !== null) validateSteering(opts.steering);
  if (opts.ipv4 !== undefined) validatePair(opts.ipv4, 4);
  if (opts.ipv6 !== undefined) validatePair(opts.ipv6, 6);
}

/** receiveOffload needs the virtio header, which carries the segment size. */
export function validateReceiveOffload(opts: TunQueueOptions, vnetHdr = opts.vnetHdr): void {
  if (opts.receiveOffload !== undefined && typeof opts.receiveOffload !== "boolean")
    throw tunError(
      "EINVAL",
      `receiveOffload must be a boolean, not ${String(opts.receiveOffload)}`,
    );
  if (opts.receiveOffload && !vnetHdr)
    throw tunError(
      "EINVAL",
      "receiveOffload needs vnetHdr: true (the virtio header carries each packet's segment size)",
    );
}

/** Checks a steering mode ("port-sum" is the only program so far). */
export function validateSteering(mode: unknown): asserts mode is SteeringMode {
  if (mode !== "port-sum")
    throw tunError(
      "EINVAL",
      `bad steering mode ${JSON.stringify(mode)}: expected "port-sum" (or null for none)`,
    );
}
