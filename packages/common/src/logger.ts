/**
 * Logging: JSON lines by pino on stdout, or pino-pretty's human-readable form when stdout
 * is a terminal. Writes are synchronous: the programs log per connection and per stats
 * interval, never per packet, and a synchronous logger loses nothing at exit.
 */
import { type Logger, pino } from "pino";
import PinoPretty from "pino-pretty";

export type { Logger } from "pino";

/**
 * The part of a logger that shard code uses: the main thread's pino logger, or in a worker a
 * sink that forwards each line to the main thread.
 */
export interface LogSink {
  trace(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  fatal(obj: object, msg: string): void;
}

/** The level names `--log-level` accepts. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  readonly level: LogLevel;
  /** Program name, added as `name` to every line. */
  readonly name: string;
  /** Force pretty (true) or JSON (false) output; default: pretty when stdout is a TTY. */
  readonly pretty?: boolean;
}

/** Creates the program logger. */
export function createLogger(options: LoggerOptions): Logger {
  const pretty = options.pretty ?? process.stdout.isTTY === true;
  const base = { level: options.level, name: options.name, base: { name: options.name } };
  if (pretty) {
    return pino(
      base,
      PinoPretty({
        sync: true,
        destination: 1,
        translateTime: "SYS:standard",
        ignore: "pid,hostname",
      }),
    );
  }
  return pino(base, pino.destination({ fd: 1, sync: true }));
}
