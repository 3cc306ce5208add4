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
  openTunnelDevice,
  type RunningProgram,
  readHandshakePacket,
  resolveHostPort,
  setUpHost,
  startShards,
  sumStats,
} from "fake-tcp-common";
import type { ServerConfig } from "./cli.js";
import { type ServerShardData, startServerShard } from "./shard.js";

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
  const device = openTunnelDevice(config, logger);
  cleanup.add("TUN device", () => device.close());
  logger.info(
    {
      tun: device.name,
      mtu: device.mtu,
      ipv4: config.ipv4,
      ipv6: config.ipv6,
      queues: device.shards,
    },
    "TUN device up",
  );

  const shards = await startShards<ServerShardData>({
    count: device.shards,
    script: new URL("./shard-worker.js", import.meta.url),
    start: startServerShard,
    data: (index) => ({
      config,
      remote,
      handshakePacket,
      shard: { index, count: device.shards },
      fd: device.queues[index].fd,
    }),
    logLevel: config.logLevel,
    context: { logger, fatal },
  });
  // Shards reset their connections through their queues, so they stop before the device closes.
  cleanup.add("shards", () => Promise.all(shards.map((shard) => shard.stop())));
  const remoteName = formatAddress(remote.address, remote.port);
  logger.info(
    { listen: config.listen, remote: remoteName, shards: shards.length },
    "fake-tcp-server running",
  );

  return {
    logger,
    logStats: () => {
      void Promise.all(shards.map((shard) => shard.stats())).then((list) =>
        logger.info(sumStats(list), "stats"),
      );
    },
    stop: () =>
      cleanup.run((what, err) => logger.error({ what, err: oneLine(err) }, "cleanup failed")),
  };
}
