/**
 * The start-up steps both programs share: a logger and an undo stack around the whole start
 * (a start that fails undoes what it had set up), the inputs read before anything on the host
 * changes (keyed mode logged, `--remote` resolved, `--handshake-packet` read), the TUN device
 * with its log line, and the shards behind the {@link RunningProgram}. Each program supplies
 * only what is its own.
 */
import { formatAddress, type HostPort, type SocketAddress } from "./address.js";
import { oneLine } from "./errors.js";
import { configuredHandshakePacket } from "./handshake-packet.js";
import { logKeyedMode } from "./key-file.js";
import { Cleanup, type RunningProgram } from "./lifecycle.js";
import { createLogger, type Logger, type LogLevel, logLinesDropped } from "./logger.js";
import type { CommonConfig } from "./options.js";
import { resolveHostPort } from "./resolve.js";
import { programStats, type ShardHandle, type ShardStarter, startShards } from "./shards.js";
import { openTunnelDevice, type ShardPosition, type TunnelDevice } from "./tunnel.js";
import { programVersion } from "./version.js";

/** What a program's start-up body works with. */
export interface ProgramContext {
  /** The program's name (`fake-tcp-server`). */
  readonly program: string;
  readonly logger: Logger;
  /** Undo steps, run in reverse on a failed start and on stop. */
  readonly cleanup: Cleanup;
  /** Reports a failure of the running tunnel. */
  readonly fatal: (err: unknown) => void;
}

/** What both programs read first, before anything on the host changes. */
export interface ProgramInputs {
  /** `--remote`, resolved at start so that a wrong name fails now, not at the first datagram. */
  readonly remotes: SocketAddress[];
  /** The `--handshake-packet` file's contents, if one is configured. */
  readonly handshakePacket: Buffer | undefined;
}

/** Options of a program's start beyond its configuration (for tests). */
export interface LaunchOptions {
  readonly logger?: Logger;
  /** Called when the running program fails (default: log it). */
  readonly fatal?: (err: unknown) => void;
}

const logCleanupError = (logger: Logger) => (what: string, err: unknown) =>
  logger.error({ what, err: oneLine(err) }, "cleanup failed");

/** The configuration a program starts from: the shared options and its `--remote`. */
export type ProgramConfig = CommonConfig & { readonly remote: HostPort };

/** A program's own start-up, after the steps all programs share. */
export type ProgramBody<C extends ProgramConfig> = (
  config: C,
  context: ProgramContext,
  inputs: ProgramInputs,
) => Promise<RunningProgram>;

/**
 * The start function of the program `name`: reads the {@link ProgramInputs}, then runs `body`;
 * if anything throws, undoes what was set up and rethrows.
 */
export function programStarter<C extends ProgramConfig>(
  name: string,
  body: ProgramBody<C>,
): (config: C, options?: LaunchOptions) => Promise<RunningProgram> {
  return async (config, options = {}) => {
    const logger = options.logger ?? createLogger({ level: config.logLevel, name });
    const cleanup = new Cleanup();
    const fatal =
      options.fatal ?? ((err: unknown) => logger.error({ err: oneLine(err) }, "tunnel failed"));
    try {
      logKeyedMode(config, logger);
      const remotes = await resolveHostPort(config.remote, config.ipv4Only);
      const handshakePacket = await configuredHandshakePacket(config);
      const context = { program: name, logger, cleanup, fatal };
      return await body(config, context, { remotes, handshakePacket });
    } catch (err) {
      await cleanup.run(logCleanupError(logger));
      throw err;
    }
  };
}

/** Opens the TUN device (see {@link openTunnelDevice}), registers its removal and logs it. */
export function openProgramDevice(config: CommonConfig, context: ProgramContext): TunnelDevice {
  const device = openTunnelDevice(config, context.logger);
  context.cleanup.add("TUN device", () => device.close());
  context.logger.info(
    {
      tun: device.name,
      mtu: device.mtu,
      ipv4: config.ipv4,
      ipv6: config.ipv6,
      queues: device.shards,
    },
    "TUN device up",
  );
  return device;
}

/** What every shard's data holds about its place, filled in by {@link startProgramShards}. */
export interface ShardPlace {
  readonly shard: ShardPosition;
  /** This shard's TUN queue (an fd of the main thread's device). */
  readonly fd: number;
}

/** Starts one shard per device queue; they stop (resetting their connections) before the device closes. */
export async function startProgramShards<D extends ShardPlace>(
  device: TunnelDevice,
  context: ProgramContext,
  options: {
    readonly script: URL;
    readonly start: ShardStarter<D>;
    /** What every shard gets besides its {@link ShardPlace}. */
    readonly data: Omit<D, keyof ShardPlace>;
    readonly logLevel: LogLevel;
  },
): Promise<ShardHandle[]> {
  const place = (index: number): ShardPlace => ({
    shard: { index, count: device.shards },
    fd: device.queues[index].fd,
  });
  const shards = await startShards<D>({
    count: device.shards,
    script: options.script,
    start: options.start,
    data: (index) => ({ ...options.data, ...place(index) }) as D,
    logLevel: options.logLevel,
    context: { logger: context.logger, fatal: context.fatal },
  });
  context.cleanup.add("shards", () => Promise.all(shards.map((shard) => shard.stop())));
  return shards;
}

/**
 * The running program over its shards: the "<program> running" line (`running`: the
 * program's own fields), stats (see {@link programStats}) on the log and, with `--metrics`, at
 * the Prometheus endpoint; stop = every undo step.
 */
export async function shardedProgram(
  shards: ShardHandle[],
  context: ProgramContext,
  config: Pick<CommonConfig, "metrics" | "key">,
  running: Record<string, unknown>,
): Promise<RunningProgram> {
  const { logger, cleanup } = context;
  logger.info(
    { ...running, shards: shards.length, keyed: config.key !== undefined },
    `${context.program} running`,
  );
  if (config.metrics) {
    const info = () => ({
      program: context.program,
      version: programVersion(),
      logLinesDropped: logLinesDropped(),
    });
    // Loaded only when asked for: prom-client takes a while to load, and the shard workers
    // (which load this module too) never need it.
    const { ProgramMetrics, startMetricsServer } = await import("./metrics.js");
    const server = await startMetricsServer(
      config.metrics,
      new ProgramMetrics(shards, info),
      logger,
    );
    cleanup.add("metrics endpoint", () => server.close());
    logger.info(
      { metrics: `http://${formatAddress(server.address.address, server.address.port)}/metrics` },
      "metrics endpoint up",
    );
  }
  return {
    logger,
    logStats: () => {
      void Promise.all(shards.map((shard) => shard.stats())).then((list) =>
        logger.info({ ...programStats(list), logLinesDropped: logLinesDropped() }, "stats"),
      );
    },
    stop: () => cleanup.run(logCleanupError(logger)),
  };
}
