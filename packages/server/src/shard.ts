/**
 * One shard of the server: a stack on its own TUN queue listening on `--listen`, and the
 * connections the device steers to that queue, each relayed over its own UDP socket. Runs in
 * a worker_thread (or in the main thread when there is one shard).
 */
import {
  applyTimeSlice,
  type RunningShard,
  type ShardContext,
  ShardMesh,
  type ShardPlace,
  type SocketAddress,
  startTunnel,
  UdpRunWriter,
  udpCounting,
} from "fake-tcp-common";
import { yieldCore } from "fake-tcp-tun";
import type { ServerConfig } from "./cli.js";
import { ServerFlows } from "./flow-groups.js";
import { RelayTable } from "./relay-table.js";

/** What the main thread hands a shard (structured-clonable). */
export interface ServerShardData extends ShardPlace {
  readonly config: ServerConfig;
  /** The UDP application, resolved once by the main thread. */
  readonly remote: SocketAddress;
  readonly handshakePacket: Uint8Array | undefined;
  /** Keyed mode: the replay cache all shards share (undefined unkeyed). */
  readonly replayCache: SharedArrayBuffer | undefined;
}

/** Starts a server shard: its stack listens on the port, every shard on the same port. */
export async function startServerShard(
  data: ServerShardData,
  context: ShardContext,
): Promise<RunningShard> {
  const { config, remote, handshakePacket } = data;
  const { logger } = context;
  applyTimeSlice(config.timeSliceMs, logger);
  const tunnel = startTunnel(data.fd, config, {
    logger,
    fatal: context.fatal,
    shard: data.shard,
    replayCache: data.replayCache,
    maxConnectionsPerSource: config.maxConnectionsPerSource,
  });
  // Datagrams to the application leave in runs: one segmented send per run per relay, written
  // at the end of each batch the tunnel received.
  const runs = new UdpRunWriter(config.udpRun, config.udpYield ? yieldCore : null);
  const relays = new RelayTable({
    remote,
    runs,
    flushTunnel: () => tunnel.flush(),
    maxDatagramBytes: config.mtu,
    handshakePacket,
    logger,
  });
  const mesh = context.mesh ?? new ShardMesh(0);
  const flows = new ServerFlows({
    mesh,
    key: config.key,
    totals: relays.totals,
    runs,
    counting: udpCounting(relays.totals),
    flushTunnel: () => tunnel.flush(),
  });
  relays.useFlows(flows);
  tunnel.onReceiveEnd(() => {
    flows.endTunnelBatch();
    runs.flush();
  });
  tunnel.listen(config.listen, (sock) => {
    relays.accept(sock);
  });

  return {
    stats: () => ({ ...relays.stats(), stack: tunnel.stats() }),
    stop: async () => {
      // Every connection is reset (RST through this shard's queue) before the queue closes.
      relays.closeAll();
      mesh.close();
      tunnel.close();
    },
  };
}
