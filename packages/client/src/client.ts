/**
 * The client program: UDP peers on `--local`, each with its own fake-TCP connection to
 * `--remote`.
 */
import {
  configuredHandshakePacket,
  formatAddress,
  type LaunchOptions,
  launchProgram,
  logKeyedMode,
  openProgramDevice,
  type ProgramContext,
  type RunningProgram,
  resolveHostPort,
  setUpHost,
  shardedProgram,
  startProgramShards,
} from "fake-tcp-common";
import type { ClientConfig } from "./cli.js";
import { bindListenSockets } from "./listen-sockets.js";
import { type ClientShardData, startClientShard } from "./shard.js";

/** Options for {@link startClient} beyond the configuration (for tests). */
export type StartClientOptions = LaunchOptions;

/**
 * Starts the client: resolves the server, reads the handshake packet, binds UDP, sets up the
 * host and the tunnel. Throws a `UsageError` for bad input; whatever was set up is undone.
 */
export function startClient(
  config: ClientConfig,
  options: StartClientOptions = {},
): Promise<RunningProgram> {
  return launchProgram("fake-tcp-client", config.logLevel, options, (context) =>
    start(config, context),
  );
}

async function start(config: ClientConfig, context: ProgramContext): Promise<RunningProgram> {
  const { logger, cleanup } = context;
  logKeyedMode(config, logger);
  // Checked at start so that a wrong name fails now, not at the first datagram.
  const initialTargets = await resolveHostPort(config.remote, config.ipv4Only);
  const ipv6Used = initialTargets.some((t) => t.family === 6);
  const handshakePacket = await configuredHandshakePacket(config);

  // Bound once here, exclusively (no SO_REUSEPORT), so that a port already in use is
  // reported before anything on the host changes; the shards bind their own sockets on the
  // same addresses when everything else is in place.
  const probe = await bindListenSockets(config.local);
  const listen = probe.map((listener) => listener.address);
  const listenNames = probe.map((listener) => listener.name);
  const closeProbe = (() => {
    let open = true;
    return () => {
      if (open) for (const listener of probe) listener.socket.close();
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
        // A flow is remembered while its connection may still be idle, and a minute more.
        flowTimeoutSeconds: Math.ceil(config.idleTimeoutMs / 1000) + 60,
      },
      ipv6Forwarding: ipv6Used && config.ipv6 !== undefined,
      logger,
      cleanup,
    });
  }

  const device = openProgramDevice(config, context);
  closeProbe();
  const shards = await startProgramShards<ClientShardData>(device, context, {
    script: new URL("./shard-worker.js", import.meta.url),
    start: startClientShard,
    data: (index, fd) => ({
      config,
      listen,
      handshakePacket,
      shard: { index, count: device.shards },
      fd,
    }),
    logLevel: config.logLevel,
  });
  logger.info(
    {
      listen: listenNames,
      remote: formatAddress(config.remote.host, config.remote.port),
      addresses: initialTargets.map((t) => t.address),
      shards: shards.length,
      keyed: config.key !== undefined,
    },
    "fake-tcp-client running",
  );
  return shardedProgram(shards, context, config);
}
