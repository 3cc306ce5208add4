/**
 * Starting the tunnel programs (`fake-tcp-client` on C, `fake-tcp-server` on S) inside the
 * rig's namespaces with the rig's addresses, and knowing when they are ready.
 */
import type { Namespace } from "./namespace.js";
import { CLIENT_MAIN, SERVER_MAIN, toolPath } from "./paths.js";
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
  /**
   * Which program: ours (default), or the phantun-shaped stand-in for phantun 0.8
   * (`dist/tools/phantun-shaped.js`; takes no --log-level, logs the same open/close lines).
   */
  flavor?: ProgramFlavor;
}

/** Our tunnel programs, or the phantun-shaped stand-in (see `tools/phantun-shaped.ts`). */
export type ProgramFlavor = "ours" | "phantun-shaped";

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
    readonly flavor: ProgramFlavor = "ours",
  ) {
    const main = role === "client" ? CLIENT_MAIN : SERVER_MAIN;
    const argv =
      flavor === "ours"
        ? [main, ...programArgs]
        : [toolPath("phantun-shaped"), role, ...programArgs];
    // Runs on the same Node as the caller (the suite runs on Node 20 and 24).
    super(label, ns, process.execPath, argv, { ...process.env, NO_COLOR: "1" });
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
    const table =
      this.flavor === "ours"
        ? ["inet", programTableName(this.tun)]
        : ["ip", `phantun_${this.tun.replace(/[^A-Za-z0-9_]/g, "_")}`];
    const res = await this.ns.execAsync("nft", ["list", "table", ...table], 5_000);
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
    const name = this.flavor === "ours" ? "fake-tcp" : "phantun-shaped";
    await this.waitFor(`${name}-${this.role} running`, timeoutMs);
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
  if ((opts.flavor ?? "ours") === "ours") args.push("--log-level", opts.logLevel ?? "info");
  args.push(...(opts.extraArgs ?? []));
  const proc = new TunnelProgram(`server@${ns.role}`, ns, "server", tun, args, opts.flavor);
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
  if ((opts.flavor ?? "ours") === "ours") args.push("--log-level", opts.logLevel ?? "info");
  args.push(...(opts.extraArgs ?? []));
  const proc = new TunnelProgram(`client@${ns.role}`, ns, "client", tun, args, opts.flavor);
  await proc.waitReady(opts.readyTimeoutMs);
  return proc;
}
