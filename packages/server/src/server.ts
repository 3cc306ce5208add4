/**
 * The server program: accepts fake-TCP connections on `--listen` and relays each to
 * `--remote` over its own UDP socket.
 */

import { ReplayCache } from "fake-tcp";
import {
  formatAddress,
  type LaunchOptions,
  openProgramDevice,
  type ProgramBody,
  type ProgramContext,
  programStarter,
  setUpHost,
  shardedProgram,
  startProgramShards,
  UsageError,
} from "fake-tcp-common";
import type { ServerConfig } from "./cli.js";
import { type ServerShardData, startServerShard } from "./shard.js";
import { ShareVerdict } from "./share-verdict.js";

/**
 * Keyed SYN tokens remembered (see `ReplayCache`): enough for a thousand handshakes a
 * second for the three minutes a token lives; 3.4 MB.
 */
const REPLAY_CACHE_SIZE = 65_536;

/** Options for {@link startServer} beyond the configuration (for tests). */
export type StartServerOptions = LaunchOptions;

const start: ProgramBody<ServerConfig> = async (config, context, { remotes, handshakePacket }) => {
  const { logger, cleanup } = context;
  // The UDP application is resolved once: every connection relays to the same address.
  const [remote] = remotes;

  // The device first: its creation fails when another instance has this --tun, before
  // anything of that instance (its nft table) is touched.
  const device = openProgramDevice(config, context);
  // Keyed: one replay cache for all shards (SharedArrayBuffer: shared, not copied, with them).
  const replayCache = config.key === undefined ? undefined : ReplayCache.memory(REPLAY_CACHE_SIZE);
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
    data: { config, remote, handshakePacket, replayCache },
    logLevel: config.logLevel,
  });
  return shardedProgram(shards, context, config, {
    listen: config.listen,
    remote: formatAddress(remote.address, remote.port),
  });
};

/**
 * Starts the server. Throws a `UsageError` for bad input; whatever was set up is undone.
 */
export const startServer = programStarter("fake-tcp-server", start);

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
