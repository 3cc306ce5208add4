/**
 * The server program: accepts fake-TCP connections on `--listen` and relays each to
 * `--remote` over its own UDP socket.
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
  UsageError,
} from "fake-tcp-common";
import type { ServerConfig } from "./cli.js";
import { type ServerShardData, startServerShard } from "./shard.js";
import { ShareVerdict } from "./share-verdict.js";

/** Options for {@link startServer} beyond the configuration (for tests). */
export type StartServerOptions = LaunchOptions;

/**
 * Starts the server. Throws a `UsageError` for bad input; whatever was set up is undone.
 */
export function startServer(
  config: ServerConfig,
  options: StartServerOptions = {},
): Promise<RunningProgram> {
  return launchProgram("fake-tcp-server", config.logLevel, options, (context) =>
    start(config, context),
  );
}

async function start(config: ServerConfig, context: ProgramContext): Promise<RunningProgram> {
  const { logger, cleanup } = context;
  logKeyedMode(config, logger);
  // The UDP application is resolved once: every connection relays to the same address.
  const [remote] = await resolveHostPort(config.remote, config.ipv4Only);
  const handshakePacket = await configuredHandshakePacket(config);

  // The device first: its creation fails when another instance has this --tun, before
  // anything of that instance (its nft table) is touched.
  const device = openProgramDevice(config, context);
  // Sharing: the verdicts are given before the queueing rule exists, and until it is gone.
  if (config.share && config.key !== undefined) startShareVerdict(config, config.key, context);
  if (config.autoRules) {
    await setUpHost({
      rules: {
        role: "server",
        tun: config.tun,
        port: config.listen,
        tunnel4: config.ipv4.peer,
        tunnel6: config.ipv6?.peer,
        // A client is remembered while its connection may still be idle, and a minute more.
        flowTimeoutSeconds: Math.ceil(config.idleTimeoutMs / 1000) + 60,
        share: config.share,
      },
      shareQueue: config.shareQueue,
      ipv6Forwarding: config.ipv6 !== undefined,
      logger,
      cleanup,
      deviceOpened: true,
    });
  }
  const shards = await startProgramShards<ServerShardData>(device, context, {
    script: new URL("./shard-worker.js", import.meta.url),
    start: startServerShard,
    data: (index, fd) => ({
      config,
      remote,
      handshakePacket,
      shard: { index, count: device.shards },
      fd,
    }),
    logLevel: config.logLevel,
  });
  const remoteName = formatAddress(remote.address, remote.port);
  logger.info(
    {
      listen: config.listen,
      remote: remoteName,
      shards: shards.length,
      keyed: config.key !== undefined,
    },
    "fake-tcp-server running",
  );
  return shardedProgram(shards, context, config);
}

/** Binds the share verdicts' queue (closed at exit, after the rules are gone). */
function startShareVerdict(config: ServerConfig, key: Uint8Array, context: ProgramContext) {
  let verdict: ShareVerdict;
  try {
    verdict = ShareVerdict.open({ queue: config.shareQueue, key, port: config.listen });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new UsageError(
      `--share: cannot bind NFQUEUE ${config.shareQueue}: ${why}; is another program bound to it? choose another --share-queue`,
    );
  }
  context.cleanup.add("share verdicts", () => {
    context.logger.info({ ...verdict.stats }, "share verdicts stopped");
    verdict.close();
  });
  context.logger.info(
    { queue: config.shareQueue, port: config.listen },
    "sharing the port: keyed SYNs to the tunnel, all others to this host's service",
  );
}
