/**
 * The server program: accepts fake-TCP connections on `--listen` and relays each to
 * `--remote` over its own UDP socket.
 */
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
  setUpHost,
} from "fake-tcp-common";
import type { ServerConfig } from "./cli.js";
import { newRelayCounters, Relay } from "./relay.js";

/** Options for {@link startServer} beyond the configuration (for tests). */
export interface StartServerOptions {
  readonly logger?: Logger;
  /** Called when the running program fails (default: log it). */
  readonly fatal?: (err: unknown) => void;
}

/**
 * Starts the server. Throws a `UsageError` for bad input; whatever was set up is undone.
 */
export async function startServer(
  config: ServerConfig,
  options: StartServerOptions = {},
): Promise<RunningProgram> {
  const logger =
    options.logger ?? createLogger({ level: config.logLevel, name: "fake-tcp-server" });
  const cleanup = new Cleanup();
  try {
    return await start(config, options, logger, cleanup);
  } catch (err) {
    await cleanup.run((what, e) => logger.error({ what, err: oneLine(e) }, "cleanup failed"));
    throw err;
  }
}

async function start(
  config: ServerConfig,
  options: StartServerOptions,
  logger: Logger,
  cleanup: Cleanup,
): Promise<RunningProgram> {
  // The UDP application is resolved once: every connection relays to the same address.
  const [remote] = await resolveHostPort(config.remote, config.ipv4Only);
  const handshakePacket = config.handshakePacketPath
    ? await readHandshakePacket(
        config.handshakePacketPath,
        maxPayload(config.mtu, config.ipv6 !== undefined),
      )
    : undefined;

  if (config.autoRules) {
    await setUpHost({
      rules: {
        role: "server",
        tun: config.tun,
        port: config.listen,
        tunnel4: config.ipv4.peer,
        tunnel6: config.ipv6?.peer,
      },
      ipv6Forwarding: config.ipv6 !== undefined,
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

  const totals = newRelayCounters();
  const counters = { opened: 0, closed: 0 };
  const relays = new Set<Relay>();
  const remoteName = formatAddress(remote.address, remote.port);

  tunnel.listen(config.listen, (sock) => {
    const relay = new Relay(sock, remote, totals, (ended, cause) => {
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
    });
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
  cleanup.add("connections", () => {
    for (const relay of [...relays]) relay.close();
  });
  logger.info({ listen: config.listen, remote: remoteName }, "fake-tcp-server running");

  return {
    logger,
    logStats: () =>
      logger.info(
        { connections: relays.size, ...counters, ...totals, stack: tunnel.stats() },
        "stats",
      ),
    stop: () =>
      cleanup.run((what, err) => logger.error({ what, err: oneLine(err) }, "cleanup failed")),
  };
}
