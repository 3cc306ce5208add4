/**
 * The one module that knows the APIs of `fake-tcp-tun` and `fake-tcp`: it opens the TUN
 * device with the configured addresses, starts the stack on its queues, and adapts the
 * stack's sockets to {@link TunnelSocket}.
 */

import { readFileSync } from "node:fs";
import { Stack } from "fake-tcp";
import { TunDevice } from "fake-tcp-tun";
import type { SocketAddress } from "./address.js";
import { UsageError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { CommonConfig } from "./options.js";
import { describeTunError } from "./tun-errors.js";
import type { TunnelSocket } from "./tunnel-socket.js";

/** The running TUN device and stack of one program. */
export interface Tunnel {
  /** The TUN device name (as the kernel has it). */
  readonly name: string;
  readonly mtu: number;
  /** Opens a connection to `target` (client). Rejects when the handshake fails. */
  connect(target: SocketAddress): Promise<TunnelSocket>;
  /** Listens on `port` and calls `onConnection` for every accepted connection (server). */
  listen(port: number, onConnection: (sock: TunnelSocket) => void): void;
  /** The stack's counters. */
  stats(): Record<string, unknown>;
  /** Closes every connection (RST), the stack and the device. Idempotent. */
  close(): void;
}

/** Received bytes after which the stack sends a pure ACK (see the comment at its use). */
export const ACK_BYTES = 32 * 1024;

/** What {@link openTunnel} needs besides the configuration. */
export interface OpenTunnelOptions {
  /** Receives the stack's rare, rate-limited messages (oversize drops and the like). */
  readonly logger: Logger;
  /** Called when accepting fails unexpectedly (the program should stop). */
  readonly fatal: (err: unknown) => void;
}

/** Opens the TUN device and starts the stack. Throws a `UsageError` for device problems. */
export function openTunnel(config: CommonConfig, options: OpenTunnelOptions): Tunnel {
  // A multi-queue TUN lets any process attach more queues to an existing device, so a
  // second instance with the same --tun would silently share (and steal) its packets.
  if (interfaceExists(config.tun)) {
    throw new UsageError(
      `--tun: an interface named "${config.tun}" already exists (another instance running?); stop it or choose another --tun`,
    );
  }
  let device: TunDevice;
  try {
    device = TunDevice.open({
      name: config.tun,
      queues: config.queues,
      mtu: config.mtu,
      ipv4: config.ipv4,
      ipv6: config.ipv6,
      // The stack's benchmark shows the TCP checksum is its main cost per datagram: with a
      // virtio header the stack writes only the pseudo-header seed and the kernel finishes it.
      vnetHdr: config.checksumOffload,
    });
  } catch (err) {
    throw describeTunError(err, config.tun);
  }
  let stack: Stack;
  try {
    stack = new Stack({
      queues: device.queues,
      local4: config.ipv4.peer,
      local6: config.ipv6?.peer,
      maxConnections: config.maxConnections,
      idleTimeoutMs: config.idleTimeoutMs,
      keepaliveIntervalMs: config.keepaliveMs,
      // Linux conntrack (our own masquerade and DNAT, and NAT routers on the way) learns the
      // scaled window only from a segment after the handshake; until the receiver sends one,
      // data more than 64 KiB past its last ack is "invalid" and dropped (or leaks un-NATed).
      // Acknowledging every 32 KiB keeps the sender inside what conntrack has seen.
      ackBytes: ACK_BYTES,
      log: (level, message) => options.logger[level]({ component: "stack" }, message),
    });
  } catch (err) {
    device.close();
    throw err;
  }
  let closed = false;
  return {
    name: device.name,
    mtu: device.mtu,
    connect: (target) => stack.connect({ address: target.address, port: target.port }),
    listen: (port, onConnection) => {
      stack.listen(port);
      void (async () => {
        for await (const sock of stack) onConnection(sock);
      })().catch((err: unknown) => {
        if (!closed) options.fatal(err);
      });
    },
    stats: () => stack.stats() as unknown as Record<string, unknown>,
    close: () => {
      if (closed) return;
      closed = true;
      // The stack RSTs every connection through the device, so it closes first.
      stack.close();
      device.close();
    },
  };
}

/**
 * True when the current network namespace has an interface called `name`. Reads
 * /proc/self/net/dev, which (unlike /sys/class/net) always shows the namespace of the
 * calling process.
 */
export function interfaceExists(name: string): boolean {
  const table = readFileSync("/proc/self/net/dev", "utf8");
  return table
    .split("\n")
    .slice(2)
    .some((line) => line.split(":")[0].trim() === name);
}
