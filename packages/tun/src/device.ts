/**
 * A whole TUN device: creates it, configures MTU, queue length and point-to-point addresses,
 * and owns its queues.
 */
import { explainConfigError, explainOpenError, tunError } from "./errors.js";
import { addPointToPoint } from "./ip-config.js";
import { addon, type SteeringMode } from "./native.js";
import {
  DEFAULT_BATCH_SIZE,
  DEFAULT_DEVICE_PATH,
  DEFAULT_TXQUEUELEN,
  type TunDeviceOptions,
  validateDeviceOptions,
} from "./options.js";
import { TunQueue } from "./queue.js";

/** Runs one interface ioctl, turning its errno into a TunError about `what`. */
function configure(name: string, what: string, step: () => void): void {
  try {
    step();
  } catch (error) {
    throw explainConfigError(error, name, what);
  }
}

/**
 * A TUN device (always IFF_TUN | IFF_NO_PI: raw IP packets, no extra header) with one or
 * more queues. The device exists as long as any of its queues is open; {@link close} closes
 * the ones it opened.
 */
export class TunDevice {
  /** Interface name (the kernel's choice when none was given). */
  readonly name: string;
  /** MTU in bytes. */
  readonly mtu: number;
  /** The queues opened with the device; spread reading over them (e.g. one per thread). */
  readonly queues: TunQueue[];

  private constructor(name: string, mtu: number, queues: TunQueue[]) {
    this.name = name;
    this.mtu = mtu;
    this.queues = queues;
  }

  /**
   * Creates and configures a TUN device: opens `queues` queues, sets MTU and txqueuelen,
   * adds the point-to-point addresses and brings the link up. Synchronous.
   *
   * @throws a TunError whose `code` is the errno name and whose message says what to do:
   * ENOENT (no /dev/net/tun), EPERM (missing CAP_NET_ADMIN), EBUSY (name in use),
   * ENAMETOOLONG (name over 15 bytes), EINVAL (bad MTU, bad address). Nothing is left open
   * on failure.
   */
  static open(opts: TunDeviceOptions = {}): TunDevice {
    validateDeviceOptions(opts);
    const queueCount = opts.queues ?? 1;
    const multiQueue = opts.multiQueue ?? queueCount > 1;
    if (queueCount > 1 && !multiQueue)
      throw tunError("EINVAL", `queues ${queueCount} needs multiQueue (leave it unset or true)`);
    const vnetHdr = opts.vnetHdr ?? false;
    const receiveOffload = opts.receiveOffload ?? false;
    const batchSize = opts.batchSize ?? DEFAULT_BATCH_SIZE;
    const devicePath = opts.devicePath ?? DEFAULT_DEVICE_PATH;
    const fds: number[] = [];
    let name = opts.name ?? "";
    try {
      for (let i = 0; i < queueCount; i++) {
        try {
          // The first queue claims the name exclusively: an existing device of that name (another
          // process's) is refused, not joined.
          const opened = addon.openQueue(
            devicePath,
            name,
            multiQueue,
            vnetHdr,
            i === 0,
            receiveOffload,
          );
          fds.push(opened.fd);
          name = opened.name;
        } catch (error) {
          throw explainOpenError(error, name, devicePath);
        }
      }
      if (opts.mtu !== undefined) {
        const mtu = opts.mtu;
        configure(name, `MTU ${mtu}`, () => addon.setMtu(name, mtu));
      }
      const txqueuelen = opts.txqueuelen ?? DEFAULT_TXQUEUELEN;
      configure(name, `txqueuelen ${txqueuelen}`, () => addon.setTxQueueLen(name, txqueuelen));
      // Up before the addresses: the kernel installs the IPv6 peer route only for an address
      // added while the link is up.
      if (opts.up ?? true) configure(name, "link up", () => addon.setUp(name, 1));
      const { ipv4, ipv6 } = opts;
      if (ipv4) addPointToPoint(name, 4, ipv4);
      if (ipv6) addPointToPoint(name, 6, ipv6);
      const mtu = addon.getMtu(name);
      const queues: TunQueue[] = [];
      for (const fd of fds)
        queues.push(new TunQueue(fd, name, mtu, vnetHdr, batchSize, receiveOffload));
      fds.length = 0; // owned by the queues from here on
      const device = new TunDevice(name, mtu, queues);
      if (opts.steering) {
        try {
          device.setSteering(opts.steering);
        } catch (error) {
          device.close();
          throw error;
        }
      }
      return device;
    } catch (error) {
      // Closing every fd removes the half-made device.
      for (const fd of fds) addon.closeFd(fd);
      throw error;
    }
  }

  /**
   * Why eBPF queue steering cannot be used in this process, or null when it can (the steering
   * program loads: bpf() exists, permission, verifier). The caller falls back to one queue.
   * Attaching can still fail on kernels older than 4.16 (no TUNSETSTEERINGEBPF).
   */
  static steeringUnavailableReason(): { code: string; message: string } | null {
    return addon.steeringProbe();
  }

  /**
   * Sets ("port-sum") or removes (null) the device's eBPF queue steering: with "port-sum", a
   * packet the kernel sends into the device goes to queue (source port + destination port) %
   * queue count, ports read from the TCP/UDP header (IPv4 at IHL*4, IPv6 at 40; anything
   * else to queue 0). See {@link TunQueue.setSteering} for errors.
   */
  setSteering(mode: SteeringMode | null): void {
    const open = this.queues.find((q) => q.fd >= 0);
    if (open === undefined)
      throw tunError("EBADF", `cannot set steering on ${this.name}: every queue is closed`);
    open.setSteering(mode);
  }

  /** Closes every queue this device opened. Idempotent. */
  close(): void {
    for (const queue of this.queues) queue.close();
  }
}
