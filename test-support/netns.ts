/**
 * Throw-away network namespaces for tests. Every namespace, process and nft table made
 * through this module is removed by `cleanupAll()` (call it in `afterAll`) and, as a last
 * resort, when the test process exits, so a failing test leaves nothing behind.
 */
import {
  type ChildProcess,
  execFile,
  execFileSync,
  type SpawnOptions,
  spawn,
} from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

const liveNamespaces = new Set<string>();
const liveProcesses = new Set<ChildProcess>();

/** Why real-device tests cannot run here, or null when they can (root with /dev/net/tun and `ip`). */
export function realDeviceUnavailableReason(): string | null {
  if (process.getuid?.() !== 0)
    return "needs root (CAP_NET_ADMIN) to create namespaces and TUN devices";
  try {
    execFileSync("ip", ["-V"], { stdio: "ignore" });
  } catch {
    return "the `ip` tool (iproute2) is not installed";
  }
  try {
    execFileSync("test", ["-c", "/dev/net/tun"]);
  } catch {
    return "/dev/net/tun is missing";
  }
  return null;
}

/**
 * Gate for a real-device suite. Outside CI a suite that cannot run is skipped with its reason
 * printed; in CI (root) it must run, so the reason becomes a failure instead of a skip.
 */
export function realDeviceGate(): { skip: boolean; reason: string | null } {
  const reason = realDeviceUnavailableReason();
  if (reason === null) return { skip: false, reason: null };
  if (process.env.CI) throw new Error(`real-device tests cannot run in CI: ${reason}`);
  console.warn(`SKIPPING real-device tests: ${reason}`);
  return { skip: true, reason };
}

/** A short unique name, e.g. for a namespace or device (at most 15 bytes for interfaces). */
export function uniqueName(prefix: string): string {
  return `${prefix}${randomBytes(3).toString("hex")}`.slice(0, 15);
}

export function run(cmd: string, args: string[], opts: { input?: string } = {}): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["pipe", "pipe", "pipe"], ...opts });
}

export class Netns {
  readonly name: string;

  constructor(prefix = "ftt") {
    this.name = uniqueName(prefix);
    run("ip", ["netns", "add", this.name]);
    liveNamespaces.add(this.name);
    this.exec("ip", ["link", "set", "lo", "up"]);
  }

  /** Runs a command inside the namespace and returns its stdout. Throws on a non-zero exit. */
  exec(cmd: string, args: string[], opts: { input?: string } = {}): string {
    return run("ip", ["netns", "exec", this.name, cmd, ...args], opts);
  }

  /**
   * Runs `node -e script ...args` inside the namespace without blocking the event loop (the
   * logs of the programs a test runs keep flowing); resolves with its stdout, rejects on a
   * non-zero exit or when it is still running after `timeoutMs`.
   */
  async runNodeScript(script: string, args: string[], timeoutMs: number): Promise<string> {
    const { stdout } = await execFileAsync(
      "ip",
      ["netns", "exec", this.name, process.execPath, "-e", script, ...args],
      { timeout: timeoutMs },
    );
    return stdout;
  }

  /** Starts a long-running process inside the namespace; it is killed by `cleanupAll()`. */
  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn("ip", ["netns", "exec", this.name, cmd, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      ...opts,
    });
    trackProcess(child);
    return child;
  }

  destroy(): void {
    if (!liveNamespaces.delete(this.name)) return;
    // Killing processes first lets the namespace (and TUN devices in it) go away at once.
    try {
      const pids = run("ip", ["netns", "pids", this.name]).split(/\s+/).filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {}
      }
    } catch {}
    try {
      run("ip", ["netns", "del", this.name]);
    } catch {}
  }
}

/** Links two namespaces with a veth pair and addresses each end (CIDR strings). */
export function linkNamespaces(
  a: Netns,
  aAddr: string,
  b: Netns,
  bAddr: string,
  names = { a: "veth0", b: "veth1" },
): void {
  const tmpA = uniqueName("va");
  const tmpB = uniqueName("vb");
  run("ip", ["link", "add", tmpA, "type", "veth", "peer", "name", tmpB]);
  run("ip", ["link", "set", tmpA, "netns", a.name]);
  run("ip", ["link", "set", tmpB, "netns", b.name]);
  a.exec("ip", ["link", "set", tmpA, "name", names.a]);
  b.exec("ip", ["link", "set", tmpB, "name", names.b]);
  a.exec("ip", ["addr", "add", aAddr, "dev", names.a]);
  b.exec("ip", ["addr", "add", bAddr, "dev", names.b]);
  a.exec("ip", ["link", "set", names.a, "up"]);
  b.exec("ip", ["link", "set", names.b, "up"]);
}

export function trackProcess(child: ChildProcess): ChildProcess {
  liveProcesses.add(child);
  child.once("exit", () => liveProcesses.delete(child));
  return child;
}

/** Kills every tracked process and removes every namespace this module made. */
export function cleanupAll(): void {
  for (const child of liveProcesses) {
    try {
      child.kill("SIGKILL");
    } catch {}
  }
  liveProcesses.clear();
  for (const name of [...liveNamespaces]) {
    const ns = Object.create(Netns.prototype) as Netns;
    (ns as { name: string }).name = name;
    ns.destroy();
  }
}

process.once("exit", cleanupAll);
