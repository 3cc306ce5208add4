/**
 * One shard of the client: its own UDP sockets on `--local` (SO_REUSEPORT when there are
 * several shards: the kernel keeps each peer's datagrams on one shard's socket, and that
 * shard owns the peer), its own peer table, and a stack on its own TUN queue whose
 * connections use source ports that the device steers back to this queue. Runs in a
 * worker_thread (or in the main thread when there is one shard).
 */
import type { Socket } from "node:dgram";
import {
  formatAddress,
  oneLine,
  type RunningShard,
  resolveHostPort,
  type ShardContext,
  type ShardPosition,
  type SocketAddress,
  shardShare,
  startTunnel,
  type Tunnel,
  type TunnelSocket,
} from "fake-tcp-common";
import type { ClientConfig } from "./cli.js";
import { ConnectionTable } from "./connection-table.js";
import { newCounters, PeerSession, type SessionContext } from "./peer-session.js";
import { bindUdpAddresses, type UdpEndpoint } from "./udp-endpoints.js";

/** What the main thread hands a shard (structured-clonable). */
export interface ClientShardData {
  readonly config: ClientConfig;
  /** The concrete addresses to listen on (a wildcard already expanded by the main thread). */
  readonly listen: readonly SocketAddress[];
  readonly handshakePacket: Uint8Array | undefined;
  readonly shard: ShardPosition;
  /** This shard's TUN queue (an fd of the main thread's device). */
  readonly fd: number;
}

/** Connects to the first address of `targets` that completes a handshake. */
async function connectFirst(tunnel: Tunnel, targets: SocketAddress[]): Promise<TunnelSocket> {
  let lastError: unknown = new Error("no address to connect to");
  for (const target of targets) {
    try {
      return await tunnel.connect(target);
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

/** Starts a client shard. Rejects with a `UsageError` when its UDP sockets cannot be bound. */
export async function startClientShard(
  data: ClientShardData,
  context: ShardContext,
): Promise<RunningShard> {
  const { config, shard } = data;
  const { logger } = context;
  // A worker receives the main thread's Buffer as a plain Uint8Array (structured clone).
  const handshakePacket = data.handshakePacket && Buffer.from(data.handshakePacket);
  const endpoints = await bindUdpAddresses(data.listen, shard.count > 1);
  let tunnel: Tunnel;
  try {
    tunnel = startTunnel(data.fd, config, { logger, fatal: context.fatal, shard });
  } catch (err) {
    for (const endpoint of endpoints) endpoint.socket.close();
    throw err;
  }

  const totals = newCounters();
  const counters = { opened: 0, closed: 0, failed: 0 };
  const table = new ConnectionTable(
    shardShare(config.maxConnections, shard.count),
    config.idleTimeoutMs,
  );
  const remoteName = formatAddress(config.remote.host, config.remote.port);

  const sessionContext: SessionContext = {
    handshakePacket,
    totals,
    connect: async () =>
      connectFirst(tunnel, await resolveHostPort(config.remote, config.ipv4Only)),
    touch: (session) => table.touch(session),
    opened: (session, sock) => {
      counters.opened++;
      logger.info(
        {
          peer: session.key,
          local: formatAddress(sock.localAddress, sock.localPort),
          remote: formatAddress(sock.remoteAddress, sock.remotePort),
        },
        "connection opened",
      );
    },
    failed: (session, err) => {
      counters.failed++;
      logger.warn(
        { peer: session.key, remote: remoteName, err: oneLine(err) },
        "connection failed",
      );
    },
    closed: (session, cause) => {
      table.forget(session);
      const sock = session.socket;
      if (!sock) return; // never opened: "connection failed" said it all
      counters.closed++;
      logger.info(
        {
          peer: session.key,
          local: formatAddress(sock.localAddress, sock.localPort),
          remote: formatAddress(sock.remoteAddress, sock.remotePort),
          cause,
          seconds: Math.round((Date.now() - session.openedAt) / 1000),
        },
        "connection closed",
      );
    },
  };

  const onMessage = (endpoint: UdpEndpoint) => {
    const socket: Socket = endpoint.socket;
    return (datagram: Buffer, rinfo: { address: string; port: number; family: string }) => {
      const key = formatAddress(rinfo.address, rinfo.port);
      let session = table.get(key);
      if (session === undefined) {
        const peer: SocketAddress = {
          address: rinfo.address,
          port: rinfo.port,
          family: rinfo.family === "IPv6" ? 6 : 4,
        };
        session = new PeerSession(peer, socket, sessionContext);
        table.add(session);
      }
      session.fromPeer(datagram, socket);
    };
  };
  for (const endpoint of endpoints) {
    endpoint.socket.on("message", onMessage(endpoint));
    endpoint.socket.on("error", (err) =>
      logger.warn({ endpoint: endpoint.name, err: oneLine(err) }, "UDP socket error"),
    );
  }

  return {
    stats: () => ({ connections: table.size, ...counters, ...totals, stack: tunnel.stats() }),
    stop: async () => {
      // Every connection is reset (RST through this shard's queue) before the queue closes.
      table.closeAll("local");
      tunnel.close();
      for (const endpoint of endpoints) endpoint.socket.close();
    },
  };
}
