/**
 * Starting the tunnel programs (`fake-tcp-client` on C, `fake-tcp-server` on S) inside the
 * rig's namespaces with the rig's addresses, and knowing when they are ready.
 */
import type { Namespace } from "./namespace.js";
import { CLIENT_MAIN, SERVER_MAIN } from "./paths.js";
import { ManagedProcess } from "./process.js";

/** Options both programs take (see `fake-tcp-client --help`). */
export interface TunnelProgramOptions {
  /** TUN device name (also names the program's nft table `inet fake_tcp_<tun>`). */
  tun?: string;
  /** Extra command-line arguments, appended last (they override the rig's). */
  extraArgs?: string[];
  /** `--log-level` (default "info": the rig counts "connection opened" lines). */
  logLevel?: string;
  /** How long to wait for readiness, in ms (default 15 s). */
  readyTimeoutMs?: number;
}

/** The default TUN names of the programs. */
export const DEFAULT_TUN = { client: "ftc0", server: "fts0" } as const;

/** nft table name the programs use for a TUN (`fake_tcp_` + name, which --tun keeps to [A-Za-z0-9_.-]). */
export function programTableName(tun: string): string {
  return `fake_tcp_${tun}`;
}

/** A running tunnel program and what the rig knows about it. */
export class TunnelProgram extends ManagedProcess {
  constructor(
    label: string,
    ns: Namespace,
    readonly role: "client" | "server",
    readonly tun: string,
    programArgs: string[],
  ) {
    const main = role === "client" ? CLIENT_MAIN : SERVER_MAIN;
    // Runs on the same Node as the caller (the suite runs on Node 20 and 24).
    super(label, ns, process.execPath, [main, ...programArgs], { ...process.env, NO_COLOR: "1" });
  }

  /** Number of "connection opened" log lines so far. */
  connectionsOpened(): number {
    return this.count(/connection opened/);
  }

  connectionsClosed(): number {
    return this.count(/connection closed/);
  }

  /** True when the program's nft table exists in its namespace. */
  async hasNftTable(): Promise<boolean> {
    const res = await this.ns.execAsync(
      "nft",
      ["list", "table", "inet", programTableName(this.tun)],
      5_000,
    );
    return res.code === 0;
  }

  /** True when the program's TUN device exists and is up. */
  async hasTun(): Promise<boolean> {
    const res = await this.ns.execAsync("ip", ["-o", "link", "show", "dev", this.tun], 5_000);
    return res.code === 0 && /[<,]UP[,>]/.test(res.stdout);
  }

  /**
   * Waits until the program logs that it runs ("fake-tcp-client running" /
   * "fake-tcp-server running": logged after its TUN, sockets and nft rules are in place).
   * Rejects with the log tail if it exits first or times out.
   */
  async waitReady(timeoutMs = 15_000): Promise<void> {
    await this.waitFor(`fake-tcp-${this.role} running`, timeoutMs);
  }
}

/** Starts `fake-tcp-server --listen PORT --remote HOST:PORT` in `ns` and waits until ready. */
export async function startServer(
  ns: Namespace,
  listenPort: number,
  remote: string,
  opts: TunnelProgramOptions = {},
): Promise<TunnelProgram> {
  const tun = opts.tun ?? DEFAULT_TUN.server;
  const args = ["--listen", String(listenPort), "--remote", remote, "--tun", tun];
  args.push("--log-level", opts.logLevel ?? "info", ...(opts.extraArgs ?? []));
  const proc = new TunnelProgram(`server@${ns.role}`, ns, "server", tun, args);
  await proc.waitReady(opts.readyTimeoutMs);
  return proc;
}

/** Starts `fake-tcp-client --local PORT --remote HOST:PORT` in `ns` and waits until ready. */
export async function startClient(
  ns: Namespace,
  local: string,
  remote: string,
  opts: TunnelProgramOptions = {},
): Promise<TunnelProgram> {
  const tun = opts.tun ?? DEFAULT_TUN.client;
  const args = ["--local", local, "--remote", remote, "--tun", tun];
  args.push("--log-level", opts.logLevel ?? "info", ...(opts.extraArgs ?? []));
  const proc = new TunnelProgram(`client@${ns.role}`, ns, "client", tun, args);
  await proc.waitReady(opts.readyTimeoutMs);
  return proc;
}
