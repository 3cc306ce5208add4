/**
 * A long-running program inside a namespace whose output the rig keeps: each stdout/stderr line
 * is stored (pino JSON lines also parsed) so tests can wait for and count log events.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import type { Namespace } from "./namespace.js";

/** One output line of a managed program. */
export interface LogLine {
  /** Milliseconds since the epoch when the rig read the line. */
  at: number;
  stream: "stdout" | "stderr";
  text: string;
  /** The line parsed as JSON when it is a JSON object (pino logs), else null. */
  json: Record<string, unknown> | null;
}

/** Keeps memory bounded if a program logs without end. */
const MAX_LINES = 200_000;

function parseJson(text: string): Record<string, unknown> | null {
  if (!text.startsWith("{")) return null;
  try {
    const value = JSON.parse(text) as unknown;
    return value !== null && typeof value === "object" ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Predicate on a log line, or a string/regex matched against the JSON `msg` or the raw text. */
export type LinePattern = string | RegExp | ((line: LogLine) => boolean);

function matcher(pattern: LinePattern): (line: LogLine) => boolean {
  if (typeof pattern === "function") return pattern;
  return (line) => {
    const msg = typeof line.json?.msg === "string" ? line.json.msg : line.text;
    return typeof pattern === "string" ? msg.includes(pattern) : pattern.test(msg);
  };
}

export class ManagedProcess {
  readonly lines: LogLine[] = [];
  readonly child: ChildProcess;
  /** Exit code, or the signal name, once the process has exited. */
  exitStatus: number | string | null = null;
  private readonly exited: Promise<void>;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly label: string,
    readonly ns: Namespace,
    cmd: string,
    readonly args: string[],
    env?: NodeJS.ProcessEnv,
  ) {
    this.child = ns.spawn(cmd, args, env);
    this.collect("stdout");
    this.collect("stderr");
    this.exited = new Promise((resolve) => {
      // "close", not "exit": the exit can be reported before the last lines of stdout are
      // read, and a waiter would then see an exit without the line the process printed last.
      this.child.once("close", (code, signal) => {
        this.exitStatus = code ?? signal ?? "unknown";
        this.notify();
        resolve();
      });
      this.child.once("error", (err) => {
        this.push("stderr", `spawn error: ${err.message}`);
        this.exitStatus = "spawn-error";
        this.notify();
        resolve();
      });
    });
  }

  private collect(stream: "stdout" | "stderr"): void {
    let pending = "";
    const source = this.child[stream];
    source?.setEncoding("utf8");
    source?.on("data", (chunk: string) => {
      pending += chunk;
      let nl = pending.indexOf("\n");
      while (nl >= 0) {
        this.push(stream, pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        nl = pending.indexOf("\n");
      }
      this.notify();
    });
    source?.on("end", () => {
      if (pending) this.push(stream, pending);
      pending = "";
      this.notify();
    });
  }

  private push(stream: "stdout" | "stderr", text: string): void {
    if (this.lines.length >= MAX_LINES) this.lines.splice(0, MAX_LINES / 2);
    this.lines.push({ at: Date.now(), stream, text, json: parseJson(text) });
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitStatus === null;
  }

  /** Lines matching the pattern, oldest first. */
  find(pattern: LinePattern): LogLine[] {
    return this.lines.filter(matcher(pattern));
  }

  count(pattern: LinePattern): number {
    return this.find(pattern).length;
  }

  /**
   * Waits for a line matching `pattern` among lines read at or after `since` (ms epoch, default
   * 0 = all). Rejects on timeout or if the process exits first, with the log tail in the error.
   */
  waitFor(pattern: LinePattern, timeoutMs = 10_000, since = 0): Promise<LogLine> {
    const match = matcher(pattern);
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = this.lines.find((l) => l.at >= since && match(l));
        if (hit) {
          done();
          resolve(hit);
          return true;
        }
        if (!this.running) {
          done();
          reject(
            new Error(
              `${this.label} exited (${this.exitStatus}) before ${String(pattern)}\n${this.tail()}`,
            ),
          );
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `${this.label}: timed out after ${timeoutMs} ms waiting for ${String(pattern)}\n${this.tail()}`,
          ),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(checkLater);
      };
      const checkLater = () => {
        check();
      };
      if (!check()) this.waiters.add(checkLater);
    });
  }

  /** The last `n` lines as text, for error messages. */
  tail(n = 30): string {
    return this.lines
      .slice(-n)
      .map((l) => `  [${this.label} ${l.stream}] ${l.text}`)
      .join("\n");
  }

  /** All output as text. */
  output(): string {
    return this.lines.map((l) => l.text).join("\n");
  }

  /**
   * Sends SIGUSR1 (the programs log their counters on it) and resolves with the first JSON
   * line read afterwards whose message matches `pattern`.
   */
  async requestStats(
    pattern: RegExp = /stat/i,
    timeoutMs = 5_000,
  ): Promise<Record<string, unknown>> {
    const since = Date.now();
    this.signal("SIGUSR1");
    const line = await this.waitFor(
      (l) => l.json !== null && pattern.test(String(l.json.msg ?? "")),
      timeoutMs,
      since,
    );
    return line.json!;
  }

  /** Resident set size in bytes from /proc, or null when the process is gone. */
  rssBytes(): number | null {
    try {
      const status = readFileSync(`/proc/${this.pid}/status`, "utf8");
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      return m ? Number(m[1]) * 1024 : null;
    } catch {
      return null;
    }
  }

  /** Sends a signal (default SIGTERM). */
  signal(signal: NodeJS.Signals = "SIGTERM"): void {
    if (this.running) this.child.kill(signal);
  }

  /** Resolves when the process has exited, or after `timeoutMs` (then returns false). */
  async waitExit(timeoutMs = 10_000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const result = await Promise.race([this.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return result;
  }

  /** Asks the process to stop (SIGTERM), then SIGKILLs it if it has not exited in time. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.signal("SIGTERM");
    if (!(await this.waitExit(graceMs))) {
      this.signal("SIGKILL");
      await this.waitExit(2_000);
    }
  }
}
