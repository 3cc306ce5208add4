/**
 * Program lifecycle: undo stack for host changes, signal handling with a bounded shutdown,
 * periodic stats, and the top-level error policy (one line on stderr, exit 2 for bad input,
 * 1 for internal errors, never a stack trace).
 */
import { EXIT_INTERNAL, EXIT_USAGE, oneLine, UsageError } from "./errors.js";
import { flushLogs, flushLogsSync, type Logger } from "./logger.js";

/** A last-in-first-out list of undo steps (remove rules, close the device...). */
export class Cleanup {
  private readonly steps: { what: string; undo: () => unknown }[] = [];

  /** Registers an undo step; steps run in reverse order of registration. */
  add(what: string, undo: () => unknown): void {
    this.steps.push({ what, undo });
  }

  /**
   * Runs every step once, newest first. A failing step is reported through `onError` and
   * does not stop the others.
   */
  async run(onError: (what: string, err: unknown) => void): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.undo();
      } catch (err) {
        onError(step.what, err);
      }
    }
  }
}

/** A started program, as `runMain` drives it. */
export interface RunningProgram {
  readonly logger: Logger;
  /** Logs the counters at info level (SIGUSR1 and the stats interval). */
  logStats(): void;
  /** RSTs every connection, removes rules and the device. Must finish well within 2 s. */
  stop(): Promise<void>;
}

/** How long a shutdown may take before the process exits anyway. */
export const SHUTDOWN_DEADLINE_MS = 1_800;

/** How long an exit waits for log lines still being written to stdout. */
const LOG_FLUSH_MS = 100;

/** Exits with `code` once the log lines written so far are out (bounded wait). */
function exitAfterFlush(code: number): void {
  void flushLogs(LOG_FLUSH_MS).finally(() => process.exit(code));
}

/** Exits at once, writing what can be written of the log synchronously. */
function exitNow(code: number): never {
  flushLogsSync();
  process.exit(code);
}

/** Writes the one-line error and returns the exit code for `err`. */
export function reportStartupError(program: string, err: unknown): number {
  if (err instanceof UsageError) {
    process.stderr.write(`${program}: error: ${oneLine(err)}\n`);
    return EXIT_USAGE;
  }
  process.stderr.write(`${program}: internal error: ${oneLine(err)}\n`);
  return EXIT_INTERNAL;
}

/** Options of {@link runMain}. */
export interface RunMainOptions {
  /** Program name for error lines. */
  readonly program: string;
  /** Seconds between stats lines in ms (0: off). Read after start. */
  readonly statsIntervalMs: () => number;
  /**
   * Starts the program; resolves to null when there is nothing to run (--help), and
   * calls `fatal` later if the running program fails.
   */
  start(fatal: (err: unknown) => void): Promise<RunningProgram | null>;
}

/**
 * Runs a program to completion and exits the process: SIGINT/SIGTERM stop it and exit 0
 * within the deadline, SIGUSR1 logs stats, startup errors print one line and exit 2 or 1.
 */
export async function runMain(options: RunMainOptions): Promise<void> {
  let running: RunningProgram | null = null;
  let stopping = false;
  let pendingSignal: NodeJS.Signals | null = null;

  const stop = (code: number, reason: Record<string, unknown>): void => {
    if (stopping) return;
    stopping = true;
    const program = running;
    if (!program) {
      process.exit(code);
    }
    program.logger.info(reason, "shutting down");
    const deadline = setTimeout(() => {
      program.logger.error({ deadlineMs: SHUTDOWN_DEADLINE_MS }, "shutdown timed out, exiting");
      exitAfterFlush(EXIT_INTERNAL);
    }, SHUTDOWN_DEADLINE_MS);
    deadline.unref();
    program.stop().then(
      () => {
        program.logger.info({ exitCode: code }, "stopped");
        exitAfterFlush(code);
      },
      (err: unknown) => {
        program.logger.error({ err: oneLine(err) }, "shutdown failed");
        exitAfterFlush(EXIT_INTERNAL);
      },
    );
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      // A second signal means "now": skip the remaining cleanup.
      exitNow(EXIT_INTERNAL);
    }
    if (!running) {
      pendingSignal = signal;
      return;
    }
    stop(0, { signal });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const fatal = (err: unknown): void => {
    if (running) {
      running.logger.fatal({ err: oneLine(err) }, "fatal error");
      stop(EXIT_INTERNAL, { cause: "fatal error" });
    } else {
      process.stderr.write(`${options.program}: internal error: ${oneLine(err)}\n`);
      process.exit(EXIT_INTERNAL);
    }
  };
  process.on("uncaughtException", fatal);
  process.on("unhandledRejection", fatal);

  try {
    running = await options.start(fatal);
  } catch (err) {
    // Lines the failed start logged (its clean-up) are written before the exit.
    exitAfterFlush(reportStartupError(options.program, err));
    return;
  }
  if (!running) process.exit(0);
  const program = running;

  process.on("SIGUSR1", () => program.logStats());
  const interval = options.statsIntervalMs();
  if (interval > 0) setInterval(() => program.logStats(), interval).unref();

  if (pendingSignal) stop(0, { signal: pendingSignal });
}
