/**
 * The start-up steps both programs share: a logger and an undo stack around the whole start
 * (a start that fails undoes what it had set up), the TUN device with its log line, and the
 * shards behind the {@link RunningProgram}. Each program supplies only what is its own.
 */
import { formatAddress } from "./address.js";
import { oneLine } from "./errors.js";
import { Cleanup, type RunningProgram } from "./lifecycle.js";
import { createLogger, type Logger, type LogLevel, logLinesDropped } from "./logger.js";
import type { CommonConfig } from "./options.js";
import { programStats, type ShardHandle, type ShardStarter, startShards } from "./shards.js";
import { openTunnelDevice, type TunnelDevice } from "./tunnel.js";
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

/** Options of a program's start beyond its configuration (for tests). */
export interface LaunchOptions {
  readonly logger?: Logger;
  /** Called when the running program fails (default: log it). */
  readonly fatal?: (err: unknown) => void;
}

const logCleanupError = (logger: Logger) => (what: string, err: unknown) =>
  logger.error({ what, err: oneLine(err) }, "cleanup failed");

/** Runs `body` as the program `name`; if it throws, undoes what it set up and rethrows. */
export async function launchProgram(
  name: string,
  logLevel: LogLevel,
  options: LaunchOptions,
  body: (context: ProgramContext) => Promise<RunningProgram>,
): Promise<RunningProgram> {
  const logger = options.logger ?? createLogger({ level: logLevel, name });
  const cleanup = new Cleanup();
  const fatal =
    options.fatal ?? ((err: unknown) => logger.error({ err: oneLine(err) }, "tunnel failed"));
  try {
    return await body({ program: name, logger, cleanup, fatal });
  } catch (err) {
    await cleanup.run(logCleanupError(logger));
    throw err;
  }
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

/** Starts one shard per device queue; they stop (resetting their connections) before the device closes. */
export async function startProgramShards<D>(
  device: TunnelDevice,
  context: ProgramContext,
  options: {
    readonly script: URL;
    readonly start: ShardStarter<D>;
    /** The data of shard `index`, which owns the queue with descriptor `fd`. */
    readonly data: (index: number, fd: number) => D;
    readonly logLevel: LogLevel;
  },
): Promise<ShardHandle[]> {
  const shards = await startShards<D>({
    count: device.shards,
    script: options.script,
    start: options.start,
    data: (index) => options.data(index, device.queues[index].fd),
    logLevel: options.logLevel,
    context: { logger: context.logger, fatal: context.fatal },
  });
  context.cleanup.add("shards", () => Promise.all(shards.map((shard) => shard.stop())));
  return shards;
}

/**
 * The running program over its shards: stats (see {@link programStats}) on the log and, with
 * `--metrics`, at the Prometheus endpoint; stop = every undo step.
 */
export async function shardedProgram(
  shards: ShardHandle[],
  context: ProgramContext,
  config: Pick<CommonConfig, "metrics">,
): Promise<RunningProgram> {
  const { logger, cleanup } = context;
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
