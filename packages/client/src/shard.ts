/**
 * One shard of the client: its own UDP sockets on `--local` (SO_REUSEPORT when there are
 * several shards: the kernel keeps each peer's datagrams on one shard's socket, and that
 * shard owns the peer), its own peer table, and a stack on its own TUN queue whose
 * connections use source ports that the device steers back to this queue. Runs in a
 * worker_thread (or in the main thread when there is one shard).
 */
import {
  applyTimeSlice,
  type EgressEntries,
  EgressMap,
  formatAddress,
  newRelayCounters,
  type RunCounting,
  type RunningShard,
  type ShardContext,
  ShardMesh,
  type ShardPlace,
  type SocketAddress,
  shardShare,
  startTunnel,
  type Tunnel,
  UdpRunWriter,
} from "fake-tcp-common";
import { yieldCore } from "fake-tcp-tun";
import type { UdpBatch, UdpBatchSocket } from "fake-tcp-tun/udp";
import { type ClientConfig, flowsFor } from "./cli.js";
import { ClientFlows } from "./flow-group.js";
import { HandshakeGate, handshakeOutcomeOf } from "./handshake-gate.js";
import {
  type BatchListenSocket,
  bindBatchUdpAddresses,
  bindUdpAddresses,
  type ListenSocket,
} from "./listen-sockets.js";
import { dgramReplySocket, type ReplySocket } from "./peer-session.js";
import { PeerTable } from "./peer-table.js";
import { ShardSessions } from "./shard-sessions.js";

/** What the main thread hands a shard (structured-clonable). */
export interface ClientShardData extends ShardPlace {
  readonly config: ClientConfig;
  /** The concrete addresses to listen on (a wildcard already expanded by the main thread). */
  readonly listen: readonly SocketAddress[];
  readonly handshakePacket: Uint8Array | undefined;
  /** The egress map as the main thread wrote it at start (automatic host rules). */
  readonly egress?: EgressEntries;
}

/** A shard's UDP sockets on `--local`. */
interface ShardSockets {
  /** Batched sockets (recvmmsg/sendmmsg), one per address. */
  readonly batched: BatchListenSocket[];
  /** node:dgram sockets of link-local addresses (shard 0 only). */
  readonly zoned: ListenSocket[];
  close(): void;
}

/**
 * Binds the shard's sockets; all or nothing. Link-local IPv6 addresses carry a zone
 * (fe80::1%eth0) that the batched socket cannot bind: those are served by shard 0 alone, with
 * a node:dgram socket (exclusive, so shard 0 owns every peer that sends to them).
 */
async function bindShardSockets(data: ClientShardData): Promise<ShardSockets> {
  const isZoned = (a: SocketAddress) => a.address.includes("%");
  // A slot of the receive batch fits an MTU-sized datagram, so one that is too large for a
  // segment still reaches the stack and is counted in sendDrops; larger ones are cut off by
  // the socket (counted too, see stats).
  const batched = bindBatchUdpAddresses(
    data.listen.filter((a) => !isZoned(a)),
    data.shard.count > 1,
    data.config.mtu,
  );
  let zoned: ListenSocket[] = [];
  if (data.shard.index === 0) {
    try {
      zoned = await bindUdpAddresses(data.listen.filter(isZoned));
    } catch (err) {
      for (const listener of batched) listener.socket.close();
      throw err;
    }
  }
  return {
    batched,
    zoned,
    close: () => {
      for (const listener of batched) listener.socket.close();
      for (const listener of zoned) listener.socket.close();
    },
  };
}

/**
 * Replies through a batched socket: to the peer's address record, in runs (one segmented
 * send per run of datagrams to one peer, see `UdpRunWriter`).
 */
function batchReplySocket(
  socket: UdpBatchSocket,
  runs: UdpRunWriter,
  counting: RunCounting,
  listen: number,
): ReplySocket {
  return {
    sendTo: (datagram, _peer, record) => runs.send(socket, datagram, record, counting),
    listen,
  };
}

/** Starts a client shard. Rejects with a `UsageError` when its UDP sockets cannot be bound. */
export async function startClientShard(
  data: ClientShardData,
  context: ShardContext,
): Promise<RunningShard> {
  const { config, shard } = data;
  const { logger } = context;
  applyTimeSlice(config.timeSliceMs, logger);
  const sockets = await bindShardSockets(data);
  let tunnel: Tunnel;
  try {
    tunnel = startTunnel(data.fd, config, { logger, fatal: context.fatal, shard });
  } catch (err) {
    sockets.close();
    throw err;
  }
  const perShard = (total: number) => shardShare(total, shard.count);
  const peers = new PeerTable({
    maxConnections: perShard(config.maxConnections),
    idleTimeoutMs: config.idleTimeoutMs,
    newPeerRate: perShard(config.newPeerRate),
    newPeerBurst: perShard(config.newPeerRate),
    now: Date.now(),
  });
  // Tunnel -> UDP: each session sends its datagrams to its peer through the run writer;
  // the runs are written at the end of each batch the tunnel received.
  const runs = new UdpRunWriter(config.udpRun, config.udpYield ? yieldCore : null);
  tunnel.onReceiveEnd(() => runs.flush());
  // The shard's relay counters, shared by its sessions and the flows it hosts.
  const totals = newRelayCounters();
  const vias: ReplySocket[] = [];
  // Every connection the shard opens, a peer's first or a flow of a group, takes a slot.
  const gate = new HandshakeGate();
  const flows = new ClientFlows({
    mesh: context.mesh ?? new ShardMesh(0),
    key: config.key,
    flows: flowsFor(config, shard.count),
    totals,
    connect: (target) => gate.run(() => tunnel.connect(target), handshakeOutcomeOf),
    replyVia: (index) => vias[index],
    flushTunnel: () => tunnel.flush(),
    // Reports of members' traffic refresh the peer table well within its idle timeout.
    activityMs: Math.min(1_000, config.idleTimeoutMs / 4),
  });
  const sessions = new ShardSessions({
    flows,
    gate,
    totals,
    config,
    tunnel,
    peers,
    // A worker receives the main thread's Buffer as a plain Uint8Array (structured clone).
    handshakePacket: data.handshakePacket && Buffer.from(data.handshakePacket),
    shards: shard.count,
    logger,
    // With the automatic host rules, the stack's segments leave with the source address the
    // egress map names for their server: looked up before every connection.
    egress: config.autoRules ? new EgressMap(config.tun, data.egress) : undefined,
  });

  // UDP -> tunnel, per received batch: each datagram to its peer's session, a new peer's
  // session opened on its first datagram; the stack's run is written at the end of the batch.
  // Replies leave from the socket the peer sent to.
  sockets.batched.forEach(({ socket }, index) => {
    vias[index] = batchReplySocket(socket, runs, sessions.udpCounting, index);
  });
  for (const [index, { socket }] of sockets.batched.entries()) {
    const via = vias[index];
    socket.onReceive((batch: UdpBatch) => {
      for (let i = 0; i < batch.count; i++) {
        const session =
          peers.find(batch, i) ??
          sessions.open(
            { address: batch.address(i), port: batch.port(i), family: batch.family(i) },
            via,
            batch.copyAddress(i),
            batch.key(i),
          );
        if (session === undefined) continue; // a new peer, refused (counted)
        session.fromPeer(batch.datagram(i), via);
      }
      flows.endBatch();
      tunnel.flush();
    });
  }
  for (const { socket, name } of sockets.zoned) {
    const via = dgramReplySocket(socket, sessions.udpCounting);
    socket.on("message", (datagram, rinfo) => {
      const session =
        peers.get(formatAddress(rinfo.address, rinfo.port)) ??
        sessions.open(
          { address: rinfo.address, port: rinfo.port, family: rinfo.family === "IPv6" ? 6 : 4 },
          via,
        );
      session?.fromPeer(datagram, via);
      tunnel.flush();
    });
    socket.on("error", (err) => sessions.socketError(name, err));
  }

  return {
    stats: () => {
      // Datagrams too large for a receive slot never reached a session: dropped like those
      // the stack refuses.
      let truncated = 0;
      for (const { socket } of sockets.batched) truncated += socket.stats().truncated;
      return { ...sessions.stats(truncated), ...flows.counters, stack: tunnel.stats() };
    },
    stop: async () => {
      // Every connection is reset (RST through this shard's queue) before the queue closes.
      flows.closeAll();
      sessions.closeAll();
      context.mesh?.close();
      tunnel.close();
      sockets.close();
    },
  };
}
