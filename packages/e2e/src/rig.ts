/**
 * The end-to-end rig: the namespace topology plus the programs and helpers that run in it.
 * Used by the end-to-end tests, the demo and the benchmark.
 *
 * Traffic paths:
 *  - direct mode: A sends UDP to B's address; R masquerades it and lets it through.
 *  - tunnel mode: A sends UDP to the tunnel client's --local address on C; C carries it as
 *    fake TCP through R to the tunnel server on S, which forwards it to the app on B.
 *    In tunnel mode A also redirects UDP aimed at B's app port to C (an nft DNAT in A), so an
 *    application that needs a TCP side channel to B (iperf3's control connection) can address
 *    B directly: the TCP goes straight through R (R passes TCP), the UDP rides the tunnel.
 */
import { ADDR, IFACE, type RigMode } from "./addresses.js";
import { Capture } from "./capture.js";
import { type IperfUdpResult, runIperfUdp, startIperfServer } from "./iperf.js";
import type { Namespace } from "./namespace.js";
import { ICMP_PING, RAW_SENDER, toolPath } from "./paths.js";
import { ManagedProcess } from "./process.js";
import { type ConntrackEntry, conntrackFlush, conntrackList } from "./router.js";
import { Topology } from "./topology.js";
import { startClient, startServer, type TunnelProgram } from "./tunnel.js";

export interface RigOptions {
  mode: RigMode;
  /** UDP port of the application on B (the tunnel server's --remote port). Default 7000. */
  appPort?: number;
  /** The tunnel client's --local UDP port on C. Default 1234. */
  localPort?: number;
  /** The tunnel server's public TCP port on S. Default 4567. */
  serverPort?: number;
  /** Extra arguments for the programs (e.g. `["--keepalive", "1"]`). */
  clientArgs?: string[];
  serverArgs?: string[];
  /** Start the tunnel programs in `create()` (tunnel mode only). Default true. */
  startTunnel?: boolean;
  /** Sysctls for R's namespace (conntrack timeouts...). */
  routerSysctls?: Record<string, string | number>;
  /** Let R pick up TCP flows mid-stream (default false: strict stateful firewall). */
  looseTcp?: boolean;
  /** Put the attacker namespace X on the WAN (see `TopologyOptions.wanAttacker`). */
  wanAttacker?: boolean;
  /**
   * Run the phantun-shaped stand-in for phantun 0.8 (`tools/phantun-shaped.ts`) in place of
   * our client or our server (clientArgs/serverArgs then go to it). Default: ours on both.
   */
  phantunShaped?: "client" | "server";
}

/** One reply of a stream probe: sequence number, when it was sent, when its echo arrived. */
export type StreamReply = [seq: number, sentAt: number, receivedAt: number];

export interface StreamResult {
  sent: number;
  received: number;
  /** Datagrams that came back but were not exactly one of those sent. */
  mismatched?: number;
  /** Datagrams carrying the injector's forged mark (see tools/marker.ts). */
  forged?: number;
  /** When the first and the last datagram were sent (ms epoch; null when none was). */
  firstSentAt?: number | null;
  lastSentAt?: number | null;
  replies: StreamReply[];
}

/** Counters of the UDP echo app on B (since it started). */
export interface EchoServerStats {
  datagrams: number;
  bytes: number;
  /** Datagrams carrying the injector's forged mark: forgeries a tunnel delivered. */
  forged: number;
  peers: number;
}

/** The stack's address behind the server's DNAT (the server's default --tun-peer). */
const SERVER_STACK_ADDRESS = "192.168.201.2";

export interface EchoSocketStats {
  port: number;
  sent: number;
  received: number;
  mismatched: number;
  firstReplyMs: number | null;
}

export interface EchoResult {
  size: number;
  totalSent: number;
  totalReceived: number;
  sockets: EchoSocketStats[];
}

export class Rig {
  readonly topology: Topology;
  readonly mode: RigMode;
  readonly appPort: number;
  readonly localPort: number;
  readonly serverPort: number;
  client: TunnelProgram | null = null;
  server: TunnelProgram | null = null;
  /** Earlier instances of restarted programs (their logs stay readable). */
  readonly retired: TunnelProgram[] = [];
  private echo: ManagedProcess | null = null;
  private iperfServer: ManagedProcess | null = null;
  private readonly extraApps: ManagedProcess[] = [];

  private constructor(readonly options: RigOptions) {
    this.mode = options.mode;
    this.appPort = options.appPort ?? 7000;
    this.localPort = options.localPort ?? 1234;
    this.serverPort = options.serverPort ?? 4567;
    this.topology = new Topology({
      mode: options.mode,
      routerSysctls: options.routerSysctls,
      looseTcp: options.looseTcp,
      wanAttacker: options.wanAttacker,
    });
  }

  /** Builds the topology and, in tunnel mode, starts both programs and waits until ready. */
  static async create(options: RigOptions): Promise<Rig> {
    const rig = new Rig(options);
    try {
      if (rig.mode === "tunnel") {
        rig.installAppRedirect();
        if (options.startTunnel ?? true) await rig.startTunnel();
      }
      return rig;
    } catch (err) {
      await rig.destroy();
      throw err;
    }
  }

  get a(): Namespace {
    return this.topology.appClient;
  }
  get c(): Namespace {
    return this.topology.tunnelClient;
  }
  get r(): Namespace {
    return this.topology.router;
  }
  get s(): Namespace {
    return this.topology.tunnelServer;
  }
  get b(): Namespace {
    return this.topology.appServer;
  }
  /** The WAN attacker (only with `wanAttacker`). */
  get x(): Namespace {
    const x = this.topology.attacker;
    if (!x) throw new Error("this rig has no WAN attacker: create it with wanAttacker: true");
    return x;
  }

  /** Where A sends UDP for the app on B: C's --local (tunnel) or B itself (direct). */
  get appTarget(): { host: string; port: number } {
    return this.mode === "tunnel"
      ? { host: ADDR.tunnelClient, port: this.localPort }
      : { host: ADDR.appServer, port: this.appPort };
  }

  private installAppRedirect(): void {
    this.a.exec(
      "nft",
      ["-f", "-"],
      `table ip e2e_app {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr ${ADDR.appServer} udp dport ${this.appPort} dnat to ${ADDR.tunnelClient}:${this.localPort}
  }
}
`,
    );
  }

  /** Starts the server on S, then the client on C. */
  async startTunnel(): Promise<void> {
    await this.startServer();
    await this.startClient();
  }

  async startServer(extraArgs: string[] = []): Promise<TunnelProgram> {
    if (this.server?.running) throw new Error("server already running");
    if (this.server) this.retired.push(this.server);
    this.server = await startServer(this.s, this.serverPort, `${ADDR.appServer}:${this.appPort}`, {
      extraArgs: [...(this.options.serverArgs ?? []), ...extraArgs],
      flavor: this.options.phantunShaped === "server" ? "phantun-shaped" : "ours",
    });
    return this.server;
  }

  async startClient(extraArgs: string[] = []): Promise<TunnelProgram> {
    if (this.client?.running) throw new Error("client already running");
    if (this.client) this.retired.push(this.client);
    this.client = await startClient(
      this.c,
      `${ADDR.tunnelClient}:${this.localPort}`,
      `${ADDR.tunnelServer}:${this.serverPort}`,
      {
        extraArgs: [...(this.options.clientArgs ?? []), ...extraArgs],
        flavor: this.options.phantunShaped === "client" ? "phantun-shaped" : "ours",
      },
    );
    return this.client;
  }

  /** Stops the server (SIGTERM, or the given signal) and starts it again; returns the new one. */
  async restartServer(signal: NodeJS.Signals = "SIGTERM", downMs = 0): Promise<TunnelProgram> {
    const old = this.server;
    if (old) {
      old.signal(signal);
      await old.waitExit(10_000);
    }
    if (downMs > 0) await sleep(downMs);
    return this.startServer();
  }

  /**
   * Starts the UDP echo app on B at the app port (replacing iperf3 there), or at another
   * `port` alongside whatever runs on the app port (e.g. to show that direct UDP is blocked).
   */
  async startEcho(port = this.appPort): Promise<ManagedProcess> {
    if (port === this.appPort) await this.stopApps();
    const echo = new ManagedProcess(`udp-echo@B:${port}`, this.b, process.execPath, [
      toolPath("udp-echo-server"),
      "--port",
      String(port),
    ]);
    if (port === this.appPort) this.echo = echo;
    else this.extraApps.push(echo);
    await echo.waitFor((l) => l.json?.event === "ready", 10_000);
    return echo;
  }

  /** The echo app's counters (SIGUSR1; it keeps running). */
  async echoStats(): Promise<EchoServerStats> {
    const echo = this.echo;
    if (!echo?.running) throw new Error("the echo app is not running: rig.startEcho() first");
    const since = Date.now();
    echo.signal("SIGUSR1");
    const line = await echo.waitFor((l) => l.json?.event === "stats", 5_000, since);
    return line.json as unknown as EchoServerStats;
  }

  /** Stops whatever app runs on B's app port. */
  async stopApps(): Promise<void> {
    await this.echo?.stop(2_000);
    await this.iperfServer?.stop(2_000);
    this.echo = null;
    this.iperfServer = null;
  }

  /**
   * Sends `count` datagrams of `size` bytes from each of `sockets` UDP sockets on A to the app
   * target and counts the replies each socket got back (the echo app must be running).
   */
  async udpEcho(opts: {
    sockets?: number;
    count?: number;
    size?: number;
    intervalMs?: number;
    waitMs?: number;
    target?: { host: string; port: number };
  }): Promise<EchoResult> {
    const t = opts.target ?? this.appTarget;
    const args = [
      toolPath("udp-probe"),
      "echo",
      "--target",
      `${t.host}:${t.port}`,
      "--sockets",
      String(opts.sockets ?? 1),
      "--count",
      String(opts.count ?? 10),
      "--size",
      String(opts.size ?? 64),
      "--interval",
      String(opts.intervalMs ?? 10),
      "--wait",
      String(opts.waitMs ?? 2_000),
    ];
    const res = await this.a.execAsync(process.execPath, args, 120_000);
    try {
      return JSON.parse(res.stdout) as EchoResult;
    } catch {
      throw new Error(`udp-probe failed (exit ${res.code}): ${res.stderr}${res.stdout}`);
    }
  }

  /**
   * Starts a steady stream of numbered datagrams from A to the echo app (one per
   * `intervalMs`), recording when each echo comes back. Call `stop()` for the result.
   */
  startStream(
    opts: {
      intervalMs?: number;
      /** Datagrams per second, sent a few per timer tick (replaces `intervalMs`). */
      ratePerSecond?: number;
      durationMs?: number;
      size?: number;
      pauseAtMs?: number;
      pauseForMs?: number;
    } = {},
  ): {
    stop(): Promise<StreamResult>;
    process: ManagedProcess;
  } {
    const t = this.appTarget;
    const proc = new ManagedProcess(`udp-stream@A`, this.a, process.execPath, [
      toolPath("udp-probe"),
      "stream",
      "--target",
      `${t.host}:${t.port}`,
      "--interval",
      String(opts.intervalMs ?? 20),
      "--duration",
      String(opts.durationMs ?? 60_000),
      "--size",
      String(opts.size ?? 64),
      "--pause-at",
      String(opts.pauseAtMs ?? -1),
      "--pause-for",
      String(opts.pauseForMs ?? 0),
      "--rate",
      String(opts.ratePerSecond ?? 0),
    ]);
    return {
      process: proc,
      async stop(): Promise<StreamResult> {
        proc.signal("SIGTERM");
        await proc.waitExit(5_000);
        const line = proc.lines.find((l) => l.json?.mode === "stream");
        if (!line?.json) throw new Error(`udp stream gave no result\n${proc.tail()}`);
        return line.json as unknown as StreamResult;
      },
    };
  }

  /**
   * iperf3 UDP from A to B (or B to A with `reverse`), measured at the receiver. Starts an
   * iperf3 server on B's app port (replacing the echo app).
   */
  async iperf(opts: {
    bitrate: number;
    seconds: number;
    length?: number;
    reverse?: boolean;
    /** iperf3's socket buffers (see `IperfUdpOptions.socketBuffer`; 0: kernel defaults). */
    socketBuffer?: number;
  }): Promise<IperfUdpResult> {
    if (!this.iperfServer?.running) {
      await this.stopApps();
      this.iperfServer = await startIperfServer(this.b, this.appPort);
    }
    return runIperfUdp(this.a, { host: ADDR.appServer, port: this.appPort, ...opts });
  }

  /** Starts a packet capture on R's WAN interface. */
  captureWan(): Promise<Capture> {
    return Capture.start(this.r, IFACE.wan);
  }

  /** R's conntrack table. */
  routerConntrack(): ConntrackEntry[] {
    return conntrackList(this.r);
  }

  /** Flushes R's conntrack table (the NAT mappings vanish, like a router reboot). */
  flushRouterConntrack(): void {
    conntrackFlush(this.r);
  }

  /**
   * The client's connection as the WAN sees it, from R's conntrack: R's public address and
   * port towards the server's public port (null when R tracks no such established flow).
   */
  clientPublicTuple(): { address: string; port: number } | null {
    const flow = this.routerConntrack().find(
      (e) =>
        e.proto === "tcp" &&
        e.state === "ESTABLISHED" &&
        e.dst === ADDR.tunnelServer &&
        e.dport === this.serverPort &&
        e.replyDst !== null &&
        e.replyDport !== null,
    );
    return flow ? { address: flow.replyDst!, port: flow.replyDport! } : null;
  }

  /** Sets sysctls in R's namespace (e.g. shorter conntrack timeouts). */
  setRouterSysctls(values: Record<string, string | number>): void {
    this.r.sysctl(values);
  }

  /**
   * Sends crafted raw packets from R (on the WAN) at the server: a SYN flood from spoofed
   * addresses at its public port, or malformed packets straight at its stack's address (past
   * the DNAT, so the kernel's conntrack cannot filter them before the program sees them).
   */
  async rawSend(
    mode: "syn-flood" | "garbage",
    count: number,
    seed = 1,
  ): Promise<{ sent: number; errors: number; kinds: Record<string, number> }> {
    const stackAddress = "192.168.201.2"; // the server's default --tun-peer
    // Only the attacker needs a route to the stack's own address (behind S's DNAT).
    this.r.exec("ip", ["route", "replace", "192.168.201.0/24", "via", ADDR.tunnelServer]);
    const dst = mode === "syn-flood" ? ADDR.tunnelServer : stackAddress;
    const res = await this.r.execAsync(
      "python3",
      [
        RAW_SENDER,
        mode,
        "--dst",
        dst,
        "--dport",
        String(this.serverPort),
        "--count",
        String(count),
        "--seed",
        String(seed),
        "--src-prefix",
        ADDR.spoofPrefix,
      ],
      120_000,
    );
    try {
      return JSON.parse(res.stdout) as {
        sent: number;
        errors: number;
        kinds: Record<string, number>;
      };
    } catch {
      throw new Error(`raw-sender failed (exit ${res.code}): ${res.stderr}${res.stdout}`);
    }
  }

  /**
   * Starts the WAN attacker's injector (`tools/tcp-injector`, see there for the modes) in X
   * and resolves once its TUN device is up and the attacker's prefix is routed into it. Its
   * result is the `{"event":"done"}` line ({@link injectorResult}). Stopped by `destroy()`.
   */
  async startInjector(
    mode: "flood" | "churn" | "hold" | "probe" | "onpath",
    args: string[],
  ): Promise<ManagedProcess> {
    const x = this.x;
    // Packets at the stack's own address (past S's DNAT) need a route there.
    x.exec("ip", ["route", "replace", `${SERVER_STACK_ADDRESS}/32`, "via", ADDR.tunnelServer]);
    const injector = new ManagedProcess(`injector@X:${mode}`, x, process.execPath, [
      toolPath("tcp-injector"),
      mode,
      "--tun",
      IFACE.attackerTun,
      "--route",
      ADDR.attackerPrefix,
      "--server",
      `${ADDR.tunnelServer}:${this.serverPort}`,
      "--stack",
      SERVER_STACK_ADDRESS,
      ...args,
    ]);
    this.extraApps.push(injector);
    // Generous: node starts slowly on a busy shared machine.
    await injector.waitFor((l) => l.json?.event === "ready", 30_000);
    return injector;
  }

  /** Waits for an injector's result line. */
  async injectorResult(
    injector: ManagedProcess,
    timeoutMs = 60_000,
  ): Promise<Record<string, unknown>> {
    const line = await injector.waitFor((l) => l.json?.event === "done", timeoutMs);
    return line.json!;
  }

  /**
   * The kernel's UDP counters in each namespace (`/proc/net/snmp`): `RcvbufErrors` shows
   * datagrams dropped because a program did not read its socket fast enough.
   */
  udpCounters(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const ns of this.topology.namespaces) {
      const lines = ns
        .exec("cat", ["/proc/net/snmp"])
        .split("\n")
        .filter((l) => l.startsWith("Udp:"));
      if (lines.length < 2) continue;
      const names = lines[0].split(/\s+/).slice(1);
      const values = lines[1].split(/\s+/).slice(1).map(Number);
      out[ns.role] = Object.fromEntries(
        names
          .map((n, i) => [n, values[i]] as const)
          .filter(([n]) =>
            ["InDatagrams", "OutDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors"].includes(n),
          ),
      );
    }
    return out;
  }

  /** Pings `dest` from `ns` (ICMP echo); counts the replies. */
  async ping(
    ns: Namespace,
    dest: string,
    count = 3,
  ): Promise<{ sent: number; received: number; rtt_ms: number[] }> {
    const res = await ns.execAsync("python3", [ICMP_PING, dest, "--count", String(count)], 30_000);
    try {
      return JSON.parse(res.stdout) as { sent: number; received: number; rtt_ms: number[] };
    } catch {
      throw new Error(`icmp-ping failed (exit ${res.code}): ${res.stderr}${res.stdout}`);
    }
  }

  /** Stops everything and removes the namespaces. Safe to call more than once. */
  async destroy(): Promise<void> {
    await Promise.allSettled([
      this.client?.stop(3_000),
      this.server?.stop(3_000),
      this.stopApps(),
      ...this.extraApps.map((p) => p.stop(1_000)),
    ]);
    this.topology.destroy();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
