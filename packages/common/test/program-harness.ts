/**
 * Test helpers for the two programs: run the built bin (`dist/main.js`) inside a throw-away
 * namespace, collect its output and exit code, wait for log lines.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Netns } from "../../../test-support/netns.js";
import { trackProcess } from "../../../test-support/netns.js";

/** Absolute path of a program's built entry point. */
export function programPath(program: "client" | "server"): string {
  return fileURLToPath(new URL(`../../${program}/dist/main.js`, import.meta.url));
}

export interface ProgramResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a program to completion inside `ns` (optionally through a wrapper such as setpriv or
 * unshare), bounded to 20 s.
 */
export function runProgram(
  ns: Netns,
  program: "client" | "server",
  args: string[],
  options: { wrapper?: string[]; env?: NodeJS.ProcessEnv } = {},
): ProgramResult {
  const result = spawnSync(
    "ip",
    [
      "netns",
      "exec",
      ns.name,
      ...(options.wrapper ?? []),
      process.execPath,
      programPath(program),
      ...args,
    ],
    {
      encoding: "utf8",
      timeout: 20_000,
      env: { PATH: process.env.PATH, ...options.env },
    },
  );
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** A program running in the background, with its JSON log lines collected. */
export class RunningProgram {
  readonly child: ChildProcess;
  readonly lines: Record<string, unknown>[] = [];
  stderr = "";
  private buffered = "";
  private waiters: { test: (l: Record<string, unknown>) => boolean; resolve: () => void }[] = [];
  readonly exited: Promise<number | null>;

  /**
   * `wrapper` runs before node inside the namespace (e.g. setpriv dropping capabilities);
   * `bin` runs that executable instead of the built entry point (an installed package).
   */
  constructor(
    ns: Netns,
    program: "client" | "server",
    args: string[],
    options: { wrapper?: string[]; bin?: string } = {},
  ) {
    this.child = trackProcess(
      spawn(
        "ip",
        [
          "netns",
          "exec",
          ns.name,
          ...(options.wrapper ?? []),
          ...(options.bin ? [options.bin] : [process.execPath, programPath(program)]),
          ...args,
        ],
        { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH } },
      ),
    );
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
    this.child.stdout!.setEncoding("utf8").on("data", (chunk: string) => this.onStdout(chunk));
    this.child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderr += chunk;
    });
  }

  private onStdout(chunk: string): void {
    this.buffered += chunk;
    let newline = this.buffered.indexOf("\n");
    while (newline >= 0) {
      const text = this.buffered.slice(0, newline);
      this.buffered = this.buffered.slice(newline + 1);
      newline = this.buffered.indexOf("\n");
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        line = { msg: text, unparsed: true };
      }
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => {
        if (!w.test(line)) return true;
        w.resolve();
        return false;
      });
    }
  }

  /** The log lines whose message is `msg`. */
  logged(msg: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l.msg === msg);
  }

  /** Resolves when a log line with message `msg` (and matching `test`) appears; bounded. */
  waitFor(
    msg: string,
    test: (line: Record<string, unknown>) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<Record<string, unknown>> {
    const match = (l: Record<string, unknown>) => l.msg === msg && test(l);
    const found = this.lines.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(
            `no "${msg}" log line within ${timeoutMs} ms; stderr: ${this.stderr}; log: ${JSON.stringify(this.lines.slice(-8))}`,
          ),
        );
      }, timeoutMs);
      this.waiters.push({
        test: match,
        resolve: () => {
          clearTimeout(timer);
          resolve(this.lines.findLast(match)!);
        },
      });
      this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`program exited before "${msg}"; stderr: ${this.stderr}`));
      });
    });
  }

  /** Sends `signal` and resolves to the exit code and the time it took to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<{ code: number | null; ms: number }> {
    const started = Date.now();
    // `ip netns exec` execs the program, so the child's pid is the program's.
    this.child.kill(signal);
    const code = await this.exited;
    return { code, ms: Date.now() - started };
  }
}

/** The rules of nft table `inet TABLE` in `ns` as the kernel lists them, in order. */
export function nftTableRules(ns: Netns, table: string): string[] {
  const rules: string[] = [];
  let inChain = false;
  for (const raw of ns.exec("nft", ["list", "table", "inet", table]).split("\n")) {
    const line = raw.trim();
    if (line.startsWith("chain ")) inChain = true;
    else if (line === "}") inChain = false;
    else if (inChain && line.length > 0 && !line.startsWith("type ")) rules.push(line);
  }
  return rules;
}

/** Asserts the shape of a bad-input failure: exit code 2, exactly one stderr line, no trace. */
export function expectOneLineError(result: ProgramResult): string {
  const lines = result.stderr.split("\n").filter((l) => l.length > 0);
  if (result.code !== 2 || lines.length !== 1 || /\n\s+at /.test(result.stderr)) {
    throw new Error(
      `expected exit 2 and one stderr line, got exit ${result.code} and: ${JSON.stringify(result.stderr)}`,
    );
  }
  return lines[0];
}
