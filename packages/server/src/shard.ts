/**
 * One shard of the server: a stack on its own TUN queue listening on `--listen`, and the
 * connections the device steers to that queue, each relayed over its own UDP socket. Runs in
 * a worker_thread (or in the main thread when there is one shard).
 */
import {
  formatAddress,
  oneLine,
  type RunningShard,
  type ShardContext,
  type ShardPosition,
  type SocketAddress,
  startTunnel,
  UdpRunWriter,
} from "fake-tcp-common";
import type { ServerConfig } from "./cli.js";
import { newRelayCounters, Relay } from "./relay.js";

/** What the main thread hands a shard (structured-clonable). */
export interface ServerShardData {
  readonly config: ServerConfig;
  /** The UDP application, resolved once by the main thread. */
  readonly remote: SocketAddress;
  readonly handshakePacket: Uint8Array | undefined;
  readonly shard: ShardPosition;
  /** This shard's TUN queue (an fd of the main thread's device). */
  readonly fd: number;
}

/** Starts a server shard: its stack listens on the port, every shard on the same port. */
export async function startServerShard(
  data: ServerShardData,
  context: ShardContext,
): Promise<RunningShard> {
  const { config, remote, handshakePacket } = data;
  const { logger } = context;
  const tunnel = startTunnel(data.fd, config, {
    logger,
    fatal: context.fatal,
    shard: data.shard,
  });
  const totals = newRelayCounters();
  const counters = { opened: 0, closed: 0 };
  const relays = new Set<Relay>();
  // Datagrams to the application leave in runs: one segmented send per run per relay.
  const runs = new UdpRunWriter();
  const remoteName = formatAddress(remote.address, remote.port);

  tunnel.listen(config.listen, (sock) => {
    let relay: Relay;
    try {
      relay = new Relay(sock, remote, totals, runs, config.mtu, onRelayClosed);
    } catch (err) {
      // No UDP socket for this connection (e.g. out of file descriptors): refuse it.
      totals.udpErrors++;
      logger.warn(
        { peer: formatAddress(sock.remoteAddress, sock.remotePort), err: oneLine(err) },
        "cannot open a UDP socket for the connection, resetting it",
      );
      sock.close();
      return;
    }
    function onRelayClosed(ended: Relay, cause: string): void {
      if (!relays.delete(ended)) return;
      counters.closed++;
      logger.info(
        {
          peer: formatAddress(sock.remoteAddress, sock.remotePort),
          local: formatAddress(sock.localAddress, sock.localPort),
          remote: remoteName,
          cause,
          seconds: Math.round((Date.now() - ended.openedAt) / 1000),
        },
        "connection closed",
      );
    }
    relays.add(relay);
    counters.opened++;
    logger.info(
      {
        peer: formatAddress(sock.remoteAddress, sock.remotePort),
        local: formatAddress(sock.localAddress, sock.localPort),
        remote: remoteName,
      },
      "connection opened",
    );
    if (handshakePacket) sock.send(handshakePacket);
  });

  return {
    stats: () => {
      let truncated = 0;
      for (const relay of relays) truncated += relay.truncated();
      return {
        connections: relays.size,
        ...counters,
        ...totals,
        sendDrops: totals.sendDrops + truncated,
        stack: tunnel.stats(),
      };
    },
    stop: async () => {
      // Every connection is reset (RST through this shard's queue) before the queue closes.
      for (const relay of [...relays]) relay.close();
      tunnel.close();
    },
  };
}
