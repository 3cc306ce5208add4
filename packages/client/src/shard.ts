/**
 * One shard of the client: its own UDP sockets on `--local` (SO_REUSEPORT when there are
 * several shards: the kernel keeps each peer's datagrams on one shard's socket, and that
 * shard owns the peer), its own peer table, and a stack on its own TUN queue whose
 * connections use source ports that the device steers back to this queue. Runs in a
 * worker_thread (or in the main thread when there is one shard).
 */
import {
  formatAddress,
  type LogSink,
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
  UdpRunWriter,
} from "fake-tcp-common";
import type { UdpBatch } from "fake-tcp-tun/udp";
import type { ClientConfig } from "./cli.js";
import { ConnectionTable } from "./connection-table.js";
import {
  dgramEndpoint,
  newCounters,
  type PeerEndpoint,
  PeerSession,
  type SessionContext,
} from "./peer-session.js";
import {
  connectionOutcome,
  RETRY_BURST,
  RETRY_RATE_PER_SECOND,
  ReconnectBackoff,
} from "./reconnect-backoff.js";
import {
  type BatchEndpoint,
  bindBatchUdpAddresses,
  bindUdpAddresses,
  type UdpEndpoint,
} from "./udp-endpoints.js";

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

/** The numeric key of an address record (see `ADDRESS_RECORD_BYTES` of fake-tcp-tun/udp). */
function keyOfRecord(record: Uint8Array): number {
  return new DataView(record.buffer, record.byteOffset, record.byteLength).getFloat64(24, true);
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
  // Link-local IPv6 addresses carry a zone (fe80::1%eth0) that the batched socket cannot
  // bind: those are served by shard 0 alone, with a node:dgram socket (exclusive, so shard 0
  // owns every peer that sends to them).
  const zoned = data.listen.filter((a) => a.address.includes("%"));
  // A slot of the receive batch fits an MTU-sized datagram, so one that is too large for a
  // segment still reaches the stack and is counted in sendDrops; larger ones are cut off by
  // the socket (counted too, see stats).
  const endpoints = bindBatchUdpAddresses(
    data.listen.filter((a) => !a.address.includes("%")),
    shard.count > 1,
    config.mtu,
  );
  let zonedEndpoints: UdpEndpoint[] = [];
  if (shard.index === 0) {
    try {
      zonedEndpoints = await bindUdpAddresses(zoned);
    } catch (err) {
      for (const endpoint of endpoints) endpoint.socket.close();
      throw err;
    }
  }
  const closeSockets = (): void => {
    for (const endpoint of endpoints) endpoint.socket.close();
    for (const endpoint of zonedEndpoints) endpoint.socket.close();
  };
  let tunnel: Tunnel;
  try {
    tunnel = startTunnel(data.fd, config, { logger, fatal: context.fatal, shard });
  } catch (err) {
    closeSockets();
    throw err;
  }

  const totals = newCounters();
  const counters = { opened: 0, closed: 0, failed: 0 };
  const peersPerShard = shardShare(config.maxConnections, shard.count);
  const table = new ConnectionTable({
    maxConnections: peersPerShard,
    idleTimeoutMs: config.idleTimeoutMs,
    newPeerRate: shardShare(config.newPeerRate, shard.count),
    newPeerBurst: shardShare(config.newPeerRate, shard.count),
    now: Date.now(),
  });
  // Lines a UDP peer or the server can trigger at will.
  const peerLog: LogSink = logger;
  const backoff = new ReconnectBackoff({
    maxPeers: peersPerShard,
    retryRatePerSecond: RETRY_RATE_PER_SECOND / shard.count,
    retryBurst: shardShare(RETRY_BURST, shard.count),
    now: Date.now(),
    onDeferred: (peer, failures, waitMs) =>
      peerLog.info({ peer, failures, waitMs }, "reconnect deferred"),
  });
  const remoteName = formatAddress(config.remote.host, config.remote.port);

  const sessionContext: SessionContext = {
    handshakePacket,
    totals,
    connect: async () =>
      connectFirst(tunnel, await resolveHostPort(config.remote, config.ipv4Only)),
    connectDelay: (session) => backoff.permit(session.key, Date.now()),
    touch: (session) => table.touch(session),
    opened: (session, sock) => {
      counters.opened++;
      peerLog.info(
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
      peerLog.warn(
        { peer: session.key, remote: remoteName, err: oneLine(err) },
        "connection failed",
      );
    },
    closed: (session, cause) => {
      table.forget(session);
      forgetKey(session);
      const now = Date.now();
      const established = session.establishedAt;
      const openMs = established === undefined ? undefined : now - established;
      backoff.ended(session.key, now, connectionOutcome(cause, openMs, session.fromServer));
      const sock = session.socket;
      if (!sock) return; // never opened: "connection failed" said it all
      counters.closed++;
      peerLog.info(
        {
          peer: session.key,
          local: formatAddress(sock.localAddress, sock.localPort),
          remote: formatAddress(sock.remoteAddress, sock.remotePort),
          cause,
          seconds: Math.round((now - session.openedAt) / 1000),
        },
        "connection closed",
      );
    },
  };

  /** A session for a peer the table does not know, if the table admits it. */
  const newSession = (peer: SocketAddress, endpoint: PeerEndpoint): PeerSession | undefined => {
    const admission = table.admit(Date.now());
    if (admission !== "admitted") {
      peerLog.info(
        { peer: formatAddress(peer.address, peer.port), reason: admission },
        "new peer refused",
      );
      return undefined;
    }
    const session = new PeerSession(peer, endpoint, sessionContext);
    table.add(session);
    return session;
  };

  // Peers by the numeric key of their address record (no string per datagram); the table
  // keyed by "ip:port" stays the authority (LRU bound, TTL, logs).
  const byKey = new Map<number, PeerSession>();
  /** The session of datagram `i`'s source, or undefined when a new peer was refused. */
  const lookUp = (batch: UdpBatch, i: number, endpoint: PeerEndpoint): PeerSession | undefined => {
    const numeric = batch.key(i);
    const known = byKey.get(numeric);
    if (
      known !== undefined &&
      !known.isClosed &&
      known.record !== undefined &&
      batch.sameSource(i, known.record)
    ) {
      table.touch(known);
      return known;
    }
    const key = formatAddress(batch.address(i), batch.port(i));
    let session = table.get(key);
    if (session === undefined) {
      const peer: SocketAddress = {
        address: batch.address(i),
        port: batch.port(i),
        family: batch.family(i),
      };
      session = newSession(peer, endpoint);
      if (session === undefined) return undefined;
    }
    session.record ??= batch.copyAddress(i);
    byKey.set(numeric, session);
    return session;
  };
  const forgetKey = (session: PeerSession): void => {
    if (session.record === undefined) return;
    const numeric = keyOfRecord(session.record);
    if (byKey.get(numeric) === session) byKey.delete(numeric);
  };
  // Replies to peers leave in runs (one segmented send per run of datagrams to one peer).
  const runs = new UdpRunWriter();
  const udpRefused = (datagrams: number): void => {
    totals.tunnelToUdp -= datagrams;
    totals.udpErrors += datagrams;
  };
  const receive = (endpoint: BatchEndpoint) => {
    const socket = endpoint.socket;
    // Replies leave from the socket the peer sent to.
    const reply: PeerEndpoint = {
      sendToPeer: (datagram, session) => runs.send(socket, datagram, session.record, udpRefused),
    };
    return (batch: UdpBatch) => {
      const buffer = batch.buffer;
      // A batch is mostly runs from one peer: those share one lookup.
      let session: PeerSession | undefined;
      let sessionKey = Number.NaN;
      for (let i = 0; i < batch.count; i++) {
        const start = batch.start(i);
        const key = batch.key(i);
        if (
          session === undefined ||
          key !== sessionKey ||
          session.isClosed ||
          session.record === undefined ||
          !batch.sameSource(i, session.record)
        ) {
          session = lookUp(batch, i, reply);
          sessionKey = key;
          if (session === undefined) continue; // a new peer refused (counted)
        }
        session.fromPeer(buffer.subarray(start, start + batch.length(i)), reply);
      }
    };
  };
  for (const endpoint of endpoints) endpoint.socket.onReceive(receive(endpoint));
  for (const endpoint of zonedEndpoints) {
    const reply = dgramEndpoint(endpoint.socket);
    endpoint.socket.on("message", (datagram, rinfo) => {
      const key = formatAddress(rinfo.address, rinfo.port);
      let session = table.get(key);
      if (session === undefined) {
        const peer: SocketAddress = {
          address: rinfo.address,
          port: rinfo.port,
          family: rinfo.family === "IPv6" ? 6 : 4,
        };
        session = newSession(peer, reply);
        if (session === undefined) return;
      }
      session.fromPeer(datagram, reply);
    });
    endpoint.socket.on("error", (err) =>
      logger.warn({ endpoint: endpoint.name, err: oneLine(err) }, "UDP socket error"),
    );
  }

  return {
    stats: () => {
      // Datagrams too large for a receive slot never reached a session: dropped like those
      // the stack refuses.
      let truncated = 0;
      for (const endpoint of endpoints) truncated += endpoint.socket.stats().truncated;
      return {
        connections: table.size,
        ...counters,
        ...backoff.counters,
        ...table.refusals,
        ...totals,
        sendDrops: totals.sendDrops + truncated,
        stack: tunnel.stats(),
      };
    },
    stop: async () => {
      // Every connection is reset (RST through this shard's queue) before the queue closes.
      table.closeAll("local");
      tunnel.close();
      closeSockets();
    },
  };
}
