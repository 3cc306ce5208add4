/**
 * The client program: UDP peers on `--local`, each with its own fake-TCP connection to
 * `--remote`.
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
import type { ClientConfig } from "./cli.js";
import { type ClientShardData, startClientShard } from "./shard.js";
import { bindUdpEndpoints } from "./udp-endpoints.js";

/** Options for {@link startClient} beyond the configuration (for tests). */
export interface StartClientOptions {
  readonly logger?: Logger;
  /** Called when the running program fails (default: log it). */
  readonly fatal?: (err: unknown) => void;
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

  // Bound once here, exclusively (no SO_REUSEPORT), so that a port already in use is
  // reported before anything on the host changes; the shards bind their own sockets on the
  // same addresses when everything else is in place.
  const probe = await bindUdpEndpoints(config.local);
  const listen = probe.map((endpoint) => endpoint.address);
  const listenNames = probe.map((endpoint) => endpoint.name);
  const closeProbe = (() => {
    let open = true;
    return () => {
      if (open) for (const endpoint of probe) endpoint.socket.close();
      open = false;
    };
  })();
  cleanup.add("UDP sockets", closeProbe);

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

  closeProbe();
  const shards = await startShards<ClientShardData>({
    count: device.shards,
    script: new URL("./shard-worker.js", import.meta.url),
    start: startClientShard,
    data: (index) => ({
      config,
      listen,
      handshakePacket,
      shard: { index, count: device.shards },
      fd: device.queues[index].fd,
    }),
    logLevel: config.logLevel,
    context: { logger, fatal },
  });
  // Shards reset their connections through their queues, so they stop before the device closes.
  cleanup.add("shards", () => Promise.all(shards.map((shard) => shard.stop())));
  logger.info(
    {
      listen: listenNames,
      remote: formatAddress(config.remote.host, config.remote.port),
      addresses: initialTargets.map((t) => t.address),
      shards: shards.length,
    },
    "fake-tcp-client running",
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
