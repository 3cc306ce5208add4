/**
 * The one module that knows the APIs of `fake-tcp-tun` and `fake-tcp`: it opens the TUN
 * device with the configured addresses and queue steering (main thread), starts a stack on
 * one queue (each shard), and adapts the stack's sockets to {@link TunnelSocket}.
 */

import { readFileSync } from "node:fs";
import { Stack, wire } from "fake-tcp";
import { TunDevice, TunQueue } from "fake-tcp-tun";
import type { SocketAddress } from "./address.js";
import { oneLine, UsageError } from "./errors.js";
import type { Logger, LogSink } from "./logger.js";
import type { CommonConfig } from "./options.js";
import { RateLimitedLog } from "./rate-limited-log.js";
import { hostSourcePorts } from "./source-ports.js";
import { describeTunError } from "./tun-errors.js";
import type { TunnelSocket } from "./tunnel-socket.js";

/** The stack of one shard of a program, on its TUN queue. */
export interface Tunnel {
  /** The TUN device name (as the kernel has it). */
  readonly name: string;
  readonly mtu: number;
  /** Opens a connection to `target` (client). Rejects when the handshake fails. */
  connect(target: SocketAddress): Promise<TunnelSocket>;
  /** Listens on `port` and calls `onConnection` for every accepted connection (server). */
  listen(port: number, onConnection: (sock: TunnelSocket) => void): void;
  /**
   * Writes the datagrams held in the stack's run. Called at the end of each batch of
   * datagrams sent into the tunnel.
   */
  flush(): void;
  /**
   * Calls `handler` after each batch of packets the tunnel received has been handled (its
   * datagrams delivered): the end of a batch in the tunnel -> UDP direction.
   */
  onReceiveEnd(handler: () => void): void;
  /** The stack's counters. */
  stats(): Record<string, unknown>;
  /** Closes every connection (RST), the stack and its queue. Idempotent. */
  close(): void;
}

/** Received bytes after which the stack sends a pure ACK (see the comment at its use). */
export const ACK_BYTES = 1024 * 1024;

/** The TUN device of a program, opened by the main thread; each shard runs on one queue. */
export interface TunnelDevice {
  /** The TUN device name (as the kernel has it). */
  readonly name: string;
  readonly mtu: number;
  /** Shards to run: one per queue (1 when queue steering is unavailable). */
  readonly shards: number;
  /** Queue `i` belongs to shard `i`. */
  readonly queues: readonly TunQueue[];
  /** Closes every queue: the device disappears once the shards' copies are closed too. */
  close(): void;
}

/**
 * Opens the TUN device with `config.queues` queues and eBPF queue steering by port sum, so
 * that the kernel hands every packet of a flow to queue `((sport + dport) mod 2^16) % queues`: shard `i`
 * owns queue `i` and never sees another shard's packets. Without steering (old kernel, no
 * permission) a packet could land on any queue, so the device gets one queue and the program
 * one shard (logged with the reason). Throws a `UsageError` for device problems.
 */
export function openTunnelDevice(config: CommonConfig, logger: Logger): TunnelDevice {
  // A multi-queue TUN lets any process attach more queues to an existing device, so a
  // second instance with the same --tun would silently share (and steal) its packets.
  if (interfaceExists(config.tun)) {
    throw new UsageError(
      `--tun: an interface named "${config.tun}" already exists (another instance running?); stop it or choose another --tun`,
    );
  }
  let shards = config.queues;
  if (shards > 1) {
    const reason = TunDevice.steeringUnavailableReason();
    if (reason !== null) {
      logger.warn(
        { queues: config.queues, reason: `${reason.code}: ${reason.message}` },
        "TUN queue steering unavailable, running one shard",
      );
      shards = 1;
    }
  }
  const open = (queues: number): TunDevice => {
    try {
      return TunDevice.open({
        name: config.tun,
        queues,
        mtu: config.mtu,
        ipv4: config.ipv4,
        ipv6: config.ipv6,
        // The stack's benchmark shows the TCP checksum is its main cost per datagram: with a
        // virtio header the stack writes only the pseudo-header seed, the kernel finishes it.
        // The same header carries segmentation offload both ways: runs of datagrams written
        // as one packet that the kernel splits, and segments the kernel hands over coalesced.
        vnetHdr: config.checksumOffload,
        receiveOffload: config.checksumOffload,
      });
    } catch (err) {
      throw describeTunError(err, config.tun);
    }
  };
  let device = open(shards);
  if (shards > 1) {
    try {
      device.setSteering("port-sum");
    } catch (err) {
      // The program loads but the kernel refuses to attach it (before 4.16, say): without
      // steering a flow's packets could reach any shard, so run one.
      logger.warn(
        { queues: config.queues, reason: oneLine(err) },
        "TUN queue steering unavailable, running one shard",
      );
      device.close();
      shards = 1;
      device = open(1);
    }
  }
  return {
    name: device.name,
    mtu: device.mtu,
    shards,
    queues: device.queues,
    close: () => device.close(),
  };
}

/** This thread's shard of the program: `index` of `count`. */
export interface ShardPosition {
  readonly index: number;
  readonly count: number;
}

/** What {@link startTunnel} needs besides the configuration. */
export interface StartTunnelOptions {
  /** Receives the stack's rare, rate-limited messages (oversize drops and the like). */
  readonly logger: LogSink;
  /** Called when accepting fails unexpectedly (the program should stop). */
  readonly fatal: (err: unknown) => void;
  /** The shard this stack is: its connections use ports that steer back to its queue. */
  readonly shard: ShardPosition;
  /**
   * Keyed listeners: the replay cache all shards share (`ReplayCache.memory`): a replayed SYN
   * from another port may reach another shard than the original.
   */
  readonly replayCache?: SharedArrayBuffer;
  /**
   * Listeners: most connections from one source over all shards (split like
   * `--max-connections`). Default: the stack's, a quarter of this shard's table.
   */
  readonly maxConnectionsPerSource?: number;
}

/**
 * Starts a stack on one TUN queue (this thread's shard), given the queue's fd from
 * {@link TunnelDevice.queues} (fds are process-wide, so this works in a worker; the queue is
 * duplicated, the main thread keeps its own). The connection bound (`--max-connections`) is
 * split evenly over the shards.
 */
export function startTunnel(fd: number, config: CommonConfig, options: StartTunnelOptions): Tunnel {
  const queue = TunQueue.fromFd(fd);
  let stack: Stack;
  try {
    stack = newStack(queue, config, options);
  } catch (err) {
    queue.close();
    throw err;
  }
  let closed = false;
  return {
    name: queue.name,
    mtu: queue.mtu,
    connect: (target) => stack.connect({ address: target.address, port: target.port }),
    listen: (port, onConnection) => {
      stack.listen(port);
      void (async () => {
        for await (const sock of stack) onConnection(sock);
      })().catch((err: unknown) => {
        if (!closed) options.fatal(err);
      });
    },
    flush: () => stack.flush(),
    onReceiveEnd: (handler) => stack.onReceiveEnd(handler),
    stats: () => stack.stats() as unknown as Record<string, unknown>,
    close: () => {
      if (closed) return;
      closed = true;
      // The stack RSTs every connection through the queue, so it closes first.
      stack.close();
      queue.close();
    },
  };
}

/**
 * The kind of a stack message for rate limiting: its text before the first colon, digits
 * left out ("datagram handler threw: <error>" is one kind whatever the error).
 */
export function stackMessageKind(message: string): string {
  const colon = message.indexOf(":");
  return (colon < 0 ? message : message.slice(0, colon)).replace(/\d+/g, "#");
}

function newStack(queue: TunQueue, config: CommonConfig, options: StartTunnelOptions): Stack {
  // The stack logs what packets from outside cause (a handler throwing per datagram): bounded.
  const log = new RateLimitedLog(options.logger);
  return new Stack({
    queues: [queue],
    local4: config.ipv4.peer,
    local6: config.ipv6?.peer,
    maxConnections: shardShare(config.maxConnections, options.shard.count),
    maxConnectionsPerSource:
      options.maxConnectionsPerSource === undefined
        ? undefined
        : shardShare(options.maxConnectionsPerSource, options.shard.count),
    idleTimeoutMs: config.idleTimeoutMs,
    keepaliveIntervalMs: config.keepaliveMs,
    // Linux conntrack (our own masquerade and DNAT, and NAT routers on the way) learns the
    // scaled window only from a segment after the handshake; until the receiver sends one,
    // data more than 64 KiB past its last ack is "invalid" and dropped (or leaks un-NATed).
    // The stack sends such a segment at once (the first keepalive, or an ACK of the
    // first data); after that conntrack allows ~1 GiB past the last ack, and an ACK per MiB
    // keeps far inside it at a few hundred ACKs per second at full speed.
    ackBytes: ACK_BYTES,
    segmentationOffload: config.segmentationOffload,
    portShard: options.shard,
    // Under the automatic (stateless) host rules the client's ports must not be ones the
    // host's own sockets may take (see source-ports.ts); the server picks no ports.
    sourcePorts: config.autoRules ? hostSourcePorts() : undefined,
    key: config.key,
    replayCacheMemory: options.replayCache,
    // Keyed handshakes announce the window scale this host's kernel would (its SYNs are
    // the ones a keyed SYN must not stand out from).
    synWindowScale: config.key === undefined ? undefined : hostWindowScale(),
    // The host forwards what the stack sends (TUN to the network), taking one off the TTL: 65
    // leaves the 64 of the host's own packets, where a TTL of 63 from a server would tell of a
    // forwarding hop behind it. Unkeyed, 64 as phantun.
    ttl: config.key === undefined ? undefined : 65,
    log: (level, message) =>
      log.write(level, stackMessageKind(message), { component: "stack" }, message),
  });
}

/**
 * The window-scale shift this host's kernel announces in its SYNs: it follows the largest
 * receive buffer a socket may get, net.ipv4.tcp_rmem's maximum or net.core.rmem_max (see
 * `wire.linuxWindowScale`). Linux's default, 7, when they cannot be read.
 */
export function hostWindowScale(
  read: (path: string) => string = (path) => readFileSync(path, "utf8"),
): number {
  try {
    const rmem = Number(read("/proc/sys/net/ipv4/tcp_rmem").trim().split(/\s+/)[2]);
    const rmemMax = Number(read("/proc/sys/net/core/rmem_max").trim());
    const limit = Math.max(rmem, rmemMax);
    return Number.isFinite(limit) && limit > 0 ? wire.linuxWindowScale(limit) : 7;
  } catch {
    return 7;
  }
}

/** Each shard's part of a bound over `count` shards (rounded up: the total is never lower). */
export function shardShare(total: number, count: number): number {
  return Math.ceil(total / count);
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
