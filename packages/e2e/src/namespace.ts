/**
 * Network namespaces owned by the rig. Every namespace and process made here is removed by
 * `destroyAll()`, and as a last resort when the process exits or receives SIGINT/SIGTERM, so
 * a failed or interrupted run leaves nothing behind.
 *
 * (The rig has its own small module rather than importing test-support/netns.ts because it
 * must also run from its built `dist/` for the demo and the benchmark.)
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";

const liveNamespaces = new Map<string, Namespace>();
let hooksInstalled = false;

/** A short unique name (interfaces allow at most 15 bytes). */
export function uniqueName(prefix: string): string {
  return `${prefix}${randomBytes(3).toString("hex")}`.slice(0, 15);
}

/** Runs a command on the host and returns its stdout; throws with stderr on failure. */
export function runSync(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, {
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
      input,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${(e.stderr ?? "").trim() || e.message}`);
  }
}

/** Output of a finished command. */
export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command asynchronously; never throws for a non-zero exit (see `code`). */
export function runAsync(cmd: string, args: string[], timeoutMs = 60_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, killSignal: "SIGKILL" },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ stdout, stderr, code });
      },
    );
  });
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once("exit", destroyAllNamespaces);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      destroyAllNamespaces();
      process.exit(signal === "SIGINT" ? 130 : 143);
    });
  }
}

/** A network namespace with loopback up, removed by `destroy()`. */
export class Namespace {
  readonly name: string;
  /** Short role label used in logs ("router", "client"...). */
  readonly role: string;

  constructor(prefix: string, role = prefix) {
    installExitHooks();
    this.name = uniqueName(prefix);
    this.role = role;
    runSync("ip", ["netns", "add", this.name]);
    liveNamespaces.set(this.name, this);
    this.exec("ip", ["link", "set", "lo", "up"]);
  }

  /** Runs a command inside the namespace and returns its stdout. Throws on a non-zero exit. */
  exec(cmd: string, args: string[], input?: string): string {
    return runSync("ip", ["netns", "exec", this.name, cmd, ...args], input);
  }

  /** Runs a command inside the namespace without blocking the event loop. */
  execAsync(cmd: string, args: string[], timeoutMs?: number): Promise<ExecResult> {
    return runAsync("ip", ["netns", "exec", this.name, cmd, ...args], timeoutMs);
  }

  /**
   * Sets sysctls inside the namespace (keys like "net.ipv4.ip_forward"). Written straight to
   * /proc/sys (its net/ part belongs to the writer's namespace): no dependency on procps.
   */
  sysctl(values: Record<string, string | number>): void {
    for (const [key, value] of Object.entries(values)) {
      const path = `/proc/sys/${key.replaceAll(".", "/")}`;
      this.exec("sh", ["-c", 'printf "%s\\n" "$1" > "$2"', "sysctl", String(value), path]);
    }
  }

  /**
   * Starts a process inside the namespace (`ip netns exec` execs the command, so the child's
   * pid is the program's own pid). It dies with the namespace in `destroy()`.
   */
  spawn(cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
    return spawn("ip", ["netns", "exec", this.name, cmd, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: env ?? process.env,
    });
  }

  /** Pids of every process running inside the namespace. */
  pids(): number[] {
    try {
      return runSync("ip", ["netns", "pids", this.name]).split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** Kills every process in the namespace, then deletes it. Idempotent. */
  destroy(): void {
    if (!liveNamespaces.delete(this.name)) return;
    // Killing processes first lets the namespace (and TUN devices in it) go away at once.
    for (const pid of this.pids()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    try {
      runSync("ip", ["netns", "del", this.name]);
    } catch {}
  }
}

/** Removes every namespace the rig made in this process (and the processes inside). */
export function destroyAllNamespaces(): void {
  for (const ns of [...liveNamespaces.values()]) ns.destroy();
}

/**
 * Links two namespaces with a veth pair, naming each end inside its namespace. Addresses are
 * added by the caller (one end may go into a bridge).
 */
export function linkVeth(a: Namespace, aIf: string, b: Namespace, bIf: string): void {
  const tmpA = uniqueName("rva");
  const tmpB = uniqueName("rvb");
  runSync("ip", ["link", "add", tmpA, "type", "veth", "peer", "name", tmpB]);
  try {
    runSync("ip", ["link", "set", tmpA, "netns", a.name]);
    runSync("ip", ["link", "set", tmpB, "netns", b.name]);
  } catch (err) {
    try {
      runSync("ip", ["link", "del", tmpA]);
    } catch {}
    throw err;
  }
  a.exec("ip", ["link", "set", tmpA, "name", aIf]);
  b.exec("ip", ["link", "set", tmpB, "name", bIf]);
}
