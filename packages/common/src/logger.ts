/**
 * Logging: JSON lines by pino on stdout, or pino-pretty's human-readable form when stdout
 * is a terminal.
 *
 * Writes are asynchronous (pino's SonicBoom destination, which writes from libuv's thread
 * pool): a stdout that is slow or not read at all (a full pipe, a stuck terminal) must not
 * stall the thread that forwards datagrams. The buffer is bounded; lines beyond it are dropped
 * and counted ({@link logLinesDropped}). At exit {@link flushLogs} waits (bounded) for the
 * writes in flight, and pino writes what is left synchronously when the process exits.
 */
import { type Logger, pino } from "pino";
import { prettyFactory } from "pino-pretty";

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
  /** Where to write (default: 1, stdout). */
  readonly fd?: number;
}

/** Bytes of log lines waiting for a slow stdout before further lines are dropped. */
export const LOG_BUFFER_BYTES = 8 * 1024 * 1024;

/** The parts of pino's SonicBoom destination used here (some of them internal to it). */
interface Destination {
  flushSync(): void;
  on(event: "drop", listener: () => void): unknown;
  readonly destroyed?: boolean;
  readonly _writing?: boolean;
  readonly _len?: number;
}

const destinations = new Set<Destination>();
let dropped = 0;

/** Log lines dropped because stdout could not keep up (the buffer was full). */
export function logLinesDropped(): number {
  return dropped;
}

/** Creates the program logger. */
export function createLogger(options: LoggerOptions): Logger {
  const pretty = options.pretty ?? process.stdout.isTTY === true;
  const destination = pino.destination({
    fd: options.fd ?? 1,
    sync: false,
    maxLength: LOG_BUFFER_BYTES,
  }) as unknown as Destination;
  destination.on("drop", () => {
    dropped++;
  });
  destinations.add(destination);
  const base = { level: options.level, name: options.name, base: { name: options.name } };
  if (pretty) {
    // Formatted on the calling thread (cheap, and the lines are rare), written asynchronously.
    const format = prettyFactory({ translateTime: "SYS:standard", ignore: "pid,hostname" });
    return pino(
      { ...base, hooks: { streamWrite: (line: string) => format(line) } },
      destination as unknown as pino.DestinationStream,
    );
  }
  return pino(base, destination as unknown as pino.DestinationStream);
}

/**
 * Waits (at most `timeoutMs`) until every logger's buffered lines are written, then writes
 * anything left synchronously. Call before `process.exit`.
 */
export async function flushLogs(timeoutMs = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const busy = (d: Destination) =>
    d.destroyed !== true && (d._writing === true || (d._len ?? 0) > 0);
  while ([...destinations].some(busy) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  flushLogsSync();
}

/** Writes every logger's buffered lines synchronously (exit paths that cannot wait). */
export function flushLogsSync(): void {
  for (const d of destinations) {
    if (d.destroyed === true || d._writing === true) continue;
    try {
      d.flushSync();
    } catch {
      // Not open yet, or stdout is gone: nothing more can be written.
    }
  }
}
