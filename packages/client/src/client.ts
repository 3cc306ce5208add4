/**
 * The client program: UDP peers on `--local`, each with its own fake-TCP connection to
 * `--remote`.
 */
import type { Socket } from "node:dgram";
import {
  Cleanup,
  createLogger,
  formatAddress,
  type Logger,
  maxPayload,
  oneLine,
  openTunnel,
  type RunningProgram,
  readHandshakePacket,
  resolveHostPort,
  type SocketAddress,
  setUpHost,
  type Tunnel,
  type TunnelSocket,
} from "fake-tcp-common";
import type { ClientConfig } from "./cli.js";
import { ConnectionTable } from "./connection-table.js";
import { newCounters, PeerSession, type SessionContext } from "./peer-session.js";
import { bindUdpEndpoints, type UdpEndpoint } from "./udp-endpoints.js";

/** Options for {@link startClient} beyond the configuration (for tests). */
export interface StartClientOptions {
  readonly logger?: Logger;
  /** Called when the running program fails (default: log it). */
  readonly fatal?: (err: unknown) => void;
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

/**
 * Starts the client: resolves the server, reads the handshake packet, binds UDP, sets up the
 * host and the tunnel. Throws a `UsageError` for bad input; whatever was set up is undone.
 */
export async function startClient(
  config: ClientConfig,
  options: StartClientOptions = {},
): Promise<RunningProgram> {
  const logger =
    options.logger ?? createLogger({ level: config.logLevel, name: "fake-tcp-client" });
  const cleanup = new Cleanup();
  try {
    return await start(config, options, logger, cleanup);
  } catch (err) {
    await cleanup.run((what, e) => logger.error({ what, err: oneLine(e) }, "cleanup failed"));
    throw err;
  }
}

async function start(
  config: ClientConfig,
  options: StartClientOptions,
  logger: Logger,
  cleanup: Cleanup,
): Promise<RunningProgram> {
  // Checked at start so that a wrong name fails now, not at the first datagram.
  const initialTargets = await resolveHostPort(config.remote, config.ipv4Only);
  const ipv6Used = initialTargets.some((t) => t.family === 6);
  const handshakePacket = config.handshakePacketPath
    ? await readHandshakePacket(
        config.handshakePacketPath,
        maxPayload(config.mtu, config.ipv6 !== undefined),
      )
    : undefined;

  const endpoints = await bindUdpEndpoints(config.local);
  cleanup.add("UDP sockets", () => {
    for (const endpoint of endpoints) endpoint.socket.close();
  });

  if (config.autoRules) {
    await setUpHost({
      rules: {
        role: "client",
        tun: config.tun,
        tunnel4: config.ipv4.peer,
        tunnel6: config.ipv6?.peer,
      },
      ipv6Forwarding: ipv6Used && config.ipv6 !== undefined,
      logger,
      cleanup,
    });
  }

  const fatal =
    options.fatal ?? ((err: unknown) => logger.error({ err: oneLine(err) }, "tunnel failed"));
  const tunnel = openTunnel(config, { logger, fatal });
  cleanup.add("TUN device", () => tunnel.close());
  logger.info(
    {
      tun: tunnel.name,
      mtu: tunnel.mtu,
      ipv4: config.ipv4,
      ipv6: config.ipv6,
      queues: config.queues,
    },
    "TUN device up",
  );

  const totals = newCounters();
  const counters = { opened: 0, closed: 0, failed: 0 };
  const table = new ConnectionTable(config.maxConnections, config.idleTimeoutMs);
  const remoteName = formatAddress(config.remote.host, config.remote.port);

  const context: SessionContext = {
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
        session = new PeerSession(peer, socket, context);
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
  cleanup.add("connections", () => table.closeAll("local"));
  logger.info(
    {
      listen: endpoints.map((e) => e.name),
      remote: remoteName,
      addresses: initialTargets.map((t) => t.address),
    },
    "fake-tcp-client running",
  );

  return {
    logger,
    logStats: () =>
      logger.info(
        { connections: table.size, ...counters, ...totals, stack: tunnel.stats() },
        "stats",
      ),
    stop: () =>
      cleanup.run((what, err) => logger.error({ what, err: oneLine(err) }, "cleanup failed")),
  };
}
