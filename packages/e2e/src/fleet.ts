/**
 * The fleet rig: a layer-4 balancer in front of several tunnel servers, all forwarding to one
 * WireGuard hub, with every client a WireGuard peer of its own (see docs/scaling.md).
 *
 *                                      ┌─ front0 S1 back0 ─┐
 *   C (clients) up0 ── cl0 L (balancer) srv0 ─ front0 S2 back0 ─ app0 H (WireGuard hub, echo)
 *   10.210.1.0/24       VIP 10.210.1.100 └─ front0 S3 back0 ─┘
 *                           10.210.2.0/24              10.210.3.0/24
 *
 * - C runs one fake-tcp-client (`--local 127.0.0.1:1234 --remote VIP:4567`) and N wireguard-go
 *   peers whose endpoint is that --local: every peer is its own UDP peer of the client, so its
 *   own fake-TCP connection through the balancer. Peer i is 10.99.i.1 and talks to the hub's
 *   10.99.i.254 (one /24 per peer, so that each peer's interface has a route of its own).
 * - L DNATs TCP to VIP:4567 to a live server, round robin per new flow (`fleet-balancer.ts`),
 *   and runs the health checker (`tools/health-checker.ts`) against the servers' --metrics.
 *   The servers route the client network back through L, whose conntrack undoes the DNAT.
 * - S1..Sn run fake-tcp-server with one and the same command line.
 * - H runs one wireguard-go with every peer (it sees each one at the address and UDP port of
 *   whichever server carries it, and follows it when that changes) and a UDP echo on 7000.
 *
 * No namespace has a default route or a link to the host. Namespace names start with "flt".
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BALANCER_TABLE, type BalancerConfig, balancerRuleset } from "./fleet-balancer.js";
import { linkVeth, Namespace } from "./namespace.js";
import { ICMP_PING, toolPath } from "./paths.js";
import { ManagedProcess } from "./process.js";
import { startClient, startServer, type TunnelProgram } from "./tunnel.js";
import { startWireGuardEnd } from "./wireguard.js";

export const FLEET_ADDR = {
  client: "10.210.1.2",
  balancerFront: "10.210.1.1",
  /** The service address clients connect to (on the balancer). */
  vip: "10.210.1.100",
  balancerBack: "10.210.2.1",
  clientPrefix: "10.210.1.0/24",
  hub: "10.210.3.1",
  /** Server i's address towards the balancer (1-based). */
  serverFront: (i: number) => `10.210.2.${10 + i}`,
  /** Server i's address towards the hub (what the hub sees as a peer's endpoint). */
  serverBack: (i: number) => `10.210.3.${10 + i}`,
  /** WireGuard peer i's address and the hub's address for it (1-based). */
  peer: (i: number) => `10.99.${i}.1`,
  hubFor: (i: number) => `10.99.${i}.254`,
} as const;

export const FLEET_PORTS = {
  tunnel: 4567,
  wireguard: 51820,
  echo: 7000,
  metrics: 9578,
  local: 1234,
};

/** Every server's command line (after --listen/--remote/--tun): one configuration for all. */
export const FLEET_SERVER_ARGS = [
  "--keepalive",
  "1",
  "--metrics",
  `0.0.0.0:${FLEET_PORTS.metrics}`,
];
/** The client's: keepalive 1 s, so a dead server is noticed in about 2.5 s. */
export const FLEET_CLIENT_ARGS = ["--keepalive", "1"];

/**
 * How long a program may take to start: the fleet starts three servers, the client and the
 * hub side by side, which on a busy 2-core machine takes well past the rig's usual 15 s.
 */
const READY_TIMEOUT_MS = 45_000;

export interface FleetOptions {
  /** Number of servers (default 3). */
  servers?: number;
  /** Health checker: ms between rounds, failures to remove, successes to add (300, 2, 2). */
  checkIntervalMs?: number;
  fall?: number;
  rise?: number;
  /** The checker deletes a removed server's flows from the balancer's conntrack (default true). */
  forgetFlows?: boolean;
}

export interface HubPeer {
  publicKey: string;
  /** The endpoint the hub sends to: a server's back address and its relay socket's port. */
  endpoint: string | null;
  latestHandshake: number;
}

interface WireGuardProcess {
  iface: string;
  process: ManagedProcess;
}

export class Fleet {
  readonly c: Namespace;
  readonly l: Namespace;
  readonly h: Namespace;
  readonly s: Namespace[] = [];
  readonly servers: Array<TunnelProgram | null> = [];
  client: TunnelProgram | null = null;
  checker: ManagedProcess | null = null;
  echo: ManagedProcess | null = null;
  hubIface = "";
  private hubPublicKey = "";
  /** Peer i's interface in C (index i - 1) and its public key. */
  readonly peers: Array<{ iface: string; publicKey: string }> = [];
  private readonly wireguard: WireGuardProcess[] = [];
  private readonly others: ManagedProcess[] = [];
  readonly balancer: BalancerConfig = { vip: FLEET_ADDR.vip, port: FLEET_PORTS.tunnel };

  private constructor(readonly options: FleetOptions) {
    const count = options.servers ?? 3;
    this.c = new Namespace("fltc", "C");
    try {
      this.l = new Namespace("fltl", "L");
      this.h = new Namespace("flth", "H");
      for (let i = 1; i <= count; i++) this.s.push(new Namespace("flts", `S${i}`));
      this.wire();
    } catch (err) {
      this.destroyNamespaces();
      throw err;
    }
  }

  /** Builds the network, starts the hub, the servers, the balancer with its checker, the client. */
  static async create(options: FleetOptions = {}): Promise<Fleet> {
    const fleet = new Fleet(options);
    try {
      // Independent start-ups run side by side: each program takes seconds on a busy machine.
      const servers = fleet.s.map((_, k) => fleet.startServer(k + 1));
      await settleAll([fleet.startHub(), ...servers]);
      const client = startClient(
        fleet.c,
        `127.0.0.1:${FLEET_PORTS.local}`,
        `${FLEET_ADDR.vip}:${FLEET_PORTS.tunnel}`,
        { extraArgs: FLEET_CLIENT_ARGS, readyTimeoutMs: READY_TIMEOUT_MS },
      ).then((c) => {
        fleet.client = c;
      });
      await settleAll([fleet.startBalancer(), client]);
      return fleet;
    } catch (err) {
      await fleet.destroy();
      throw err;
    }
  }

  private wire(): void {
    const { c, l, h } = this;
    linkVeth(c, "up0", l, "cl0");
    up(c, "up0", `${FLEET_ADDR.client}/24`);
    up(l, "cl0", `${FLEET_ADDR.balancerFront}/24`);
    l.exec("ip", ["addr", "add", `${FLEET_ADDR.vip}/32`, "dev", "cl0"]);
    for (const [ns, bridge, cidr] of [
      [l, "srv0", `${FLEET_ADDR.balancerBack}/24`],
      [h, "app0", `${FLEET_ADDR.hub}/24`],
    ] as const) {
      ns.exec("ip", ["link", "add", bridge, "type", "bridge"]);
      up(ns, bridge, cidr);
    }
    this.s.forEach((s, k) => {
      const i = k + 1;
      linkVeth(s, "front0", l, `s${i}`);
      linkVeth(s, "back0", h, `s${i}`);
      for (const ns of [l, h]) {
        ns.exec("ip", ["link", "set", `s${i}`, "master", ns === l ? "srv0" : "app0"]);
        ns.exec("ip", ["link", "set", `s${i}`, "up"]);
      }
      up(s, "front0", `${FLEET_ADDR.serverFront(i)}/24`);
      up(s, "back0", `${FLEET_ADDR.serverBack(i)}/24`);
      // Replies to clients go back through the balancer, whose conntrack undoes its DNAT.
      s.exec("ip", ["route", "add", FLEET_ADDR.clientPrefix, "via", FLEET_ADDR.balancerBack]);
    });
    l.sysctl({ "net.ipv4.ip_forward": 1 });
    for (const ns of [c, l, h, ...this.s])
      ns.sysctl({ "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0 });
    // Bridged frames skip the host's iptables hooks, should br_netfilter be loaded.
    for (const ns of [l, h])
      for (const family of ["iptables", "ip6tables"]) {
        const path = `/proc/sys/net/bridge/bridge-nf-call-${family}`;
        ns.exec("sh", ["-c", '[ ! -e "$1" ] || printf "0\\n" > "$1"', "sysctl", path]);
      }
  }

  /** The hub's wireguard-go (no peers yet) and the echo app. */
  private async startHub(): Promise<void> {
    const end = await startWireGuardEnd(this.h, FLEET_ADDR.hubFor(1), 1400);
    this.wireguard.push({ iface: end.iface, process: end.process });
    this.hubIface = end.iface;
    setKey(this.h, end.iface, end.privateKey, ["listen-port", String(FLEET_PORTS.wireguard)]);
    this.hubPublicKey = this.h.exec("wg", ["pubkey"], end.privateKey).trim();
    this.echo = new ManagedProcess("udp-echo@H", this.h, process.execPath, [
      toolPath("udp-echo-server"),
      "--port",
      String(FLEET_PORTS.echo),
    ]);
    await this.echo.waitFor((l) => l.json?.event === "ready", 10_000);
  }

  /** Starts server i (1-based) with the fleet's one command line. */
  async startServer(i: number): Promise<TunnelProgram> {
    const old = this.servers[i - 1];
    if (old?.running) throw new Error(`server ${i} is already running`);
    const server = await startServer(
      this.s[i - 1],
      FLEET_PORTS.tunnel,
      `${FLEET_ADDR.hub}:${FLEET_PORTS.wireguard}`,
      { extraArgs: FLEET_SERVER_ARGS, readyTimeoutMs: READY_TIMEOUT_MS },
    );
    if (old) this.others.push(old);
    this.servers[i - 1] = server;
    return server;
  }

  /** The balancer's table (empty server list) and its checker; resolves once all are live. */
  private async startBalancer(): Promise<void> {
    this.l.exec("nft", ["-f", "-"], balancerRuleset(this.balancer, []));
    await this.startChecker(this.options.forgetFlows ?? true, this.s.length);
  }

  /**
   * Replaces the health checker by one that does or does not forget a removed server's flows;
   * resolves once it has installed its first list (the table keeps the old one meanwhile).
   */
  async restartChecker(forgetFlows: boolean): Promise<void> {
    await this.checker?.stop(2_000);
    if (this.checker) this.others.push(this.checker);
    const live = this.servers.filter((s) => s?.running).length;
    await this.startChecker(forgetFlows, live);
  }

  private async startChecker(forgetFlows: boolean, expectLive: number): Promise<void> {
    const args = [
      toolPath("health-checker"),
      "--vip",
      this.balancer.vip,
      "--port",
      String(this.balancer.port),
      "--metrics-port",
      String(FLEET_PORTS.metrics),
      "--interval",
      String(this.options.checkIntervalMs ?? 300),
      "--fall",
      String(this.options.fall ?? 2),
      "--rise",
      String(this.options.rise ?? 2),
      "--forget-flows",
      forgetFlows ? "yes" : "no",
    ];
    for (let i = 1; i <= this.s.length; i++) args.push("--server", FLEET_ADDR.serverFront(i));
    this.checker = new ManagedProcess("health-checker@L", this.l, process.execPath, args);
    const ready = await this.checker.waitFor((l) => l.json?.event === "ready", 15_000);
    const live = ready.json?.live as string[];
    if (live.length !== expectLive)
      throw new Error(`only ${live.join(", ")} passed the health check\n${this.checker.tail()}`);
  }

  /** The balancer's table as nft lists it. */
  balancerTable(): string {
    return this.l.exec("nft", ["list", "table", "ip", BALANCER_TABLE]);
  }

  /** Starts peers 1..count (wireguard-go in C) and adds them to the hub. */
  async addPeers(count: number): Promise<void> {
    const start = this.peers.length + 1;
    for (let first = start; first < start + count; first += 15) {
      const batch = [];
      for (let i = first; i < Math.min(first + 15, start + count); i++) batch.push(this.addPeer(i));
      await Promise.all(batch);
    }
  }

  private async addPeer(i: number): Promise<void> {
    const end = await startWireGuardEnd(this.c, FLEET_ADDR.peer(i), 1400);
    this.wireguard.push({ iface: end.iface, process: end.process });
    const publicKey = this.c.exec("wg", ["pubkey"], end.privateKey).trim();
    this.peers[i - 1] = { iface: end.iface, publicKey };
    if (i > 1)
      this.h.exec("ip", ["addr", "add", `${FLEET_ADDR.hubFor(i)}/24`, "dev", this.hubIface]);
    this.h.exec("wg", [
      "set",
      this.hubIface,
      "peer",
      publicKey,
      "allowed-ips",
      `${FLEET_ADDR.peer(i)}/32`,
    ]);
    setKey(this.c, end.iface, end.privateKey, [
      "peer",
      this.hubPublicKey,
      "endpoint",
      `127.0.0.1:${FLEET_PORTS.local}`,
      "allowed-ips",
      `${FLEET_ADDR.hubFor(i)}/32`,
    ]);
  }

  /** The hub's view of every peer: endpoint (which server carries it) and last handshake. */
  hubPeers(): Map<string, HubPeer> {
    const out = new Map<string, HubPeer>();
    const endpoints = this.h.exec("wg", ["show", this.hubIface, "endpoints"]);
    for (const line of endpoints.trim().split("\n")) {
      const [key, endpoint] = line.split("\t");
      if (key)
        out.set(key, {
          publicKey: key,
          endpoint: endpoint === "(none)" ? null : endpoint,
          latestHandshake: 0,
        });
    }
    const handshakes = this.h.exec("wg", ["show", this.hubIface, "latest-handshakes"]);
    for (const line of handshakes.trim().split("\n")) {
      const [key, at] = line.split("\t");
      const peer = out.get(key);
      if (peer) peer.latestHandshake = Number(at);
    }
    return out;
  }

  /** Which server (1-based) carries each peer (index = peer - 1), from the hub; 0 = none yet. */
  peerServers(): number[] {
    const hub = this.hubPeers();
    return this.peers.map((p) => {
      const host = hub.get(p.publicKey)?.endpoint?.replace(/:\d+$/, "");
      for (let i = 1; i <= this.s.length; i++) if (host === FLEET_ADDR.serverBack(i)) return i;
      return 0;
    });
  }

  /** Starts an echo stream through every peer's WireGuard (multi-stream tool in C). */
  async startStreams(intervalMs: number, durationMs: number): Promise<ManagedProcess> {
    const args = [
      toolPath("multi-stream"),
      "--interval",
      String(intervalMs),
      "--duration",
      String(durationMs),
    ];
    for (let i = 1; i <= this.peers.length; i++)
      args.push("--target", `${FLEET_ADDR.hubFor(i)}:${FLEET_PORTS.echo}`);
    const proc = new ManagedProcess("multi-stream@C", this.c, process.execPath, args);
    this.others.push(proc);
    await proc.waitFor((l) => l.json?.event === "ready", 10_000);
    return proc;
  }

  /** ICMP echo through peer i's WireGuard to the hub. */
  async ping(i: number, count = 2): Promise<{ sent: number; received: number }> {
    const res = await this.c.execAsync(
      "python3",
      [ICMP_PING, FLEET_ADDR.hubFor(i), "--count", String(count)],
      30_000,
    );
    try {
      return JSON.parse(res.stdout) as { sent: number; received: number };
    } catch {
      throw new Error(`icmp-ping failed (exit ${res.code}): ${res.stderr}${res.stdout}`);
    }
  }

  /** Stops every process and removes every namespace (and with them the nft tables). */
  async destroy(): Promise<void> {
    await Promise.allSettled([
      ...this.others.map((p) => p.stop(1_000)),
      this.checker?.stop(2_000),
      this.client?.stop(3_000),
      ...this.servers.map((s) => s?.stop(3_000)),
      this.echo?.stop(1_000),
      ...this.wireguard.map((w) => w.process.stop(2_000)),
    ]);
    // wireguard-go removes its control socket on a clean exit only.
    for (const w of this.wireguard) rmSync(`/var/run/wireguard/${w.iface}.sock`, { force: true });
    this.destroyNamespaces();
  }

  private destroyNamespaces(): void {
    for (const ns of [this.c, this.l, this.h, ...this.s]) ns?.destroy();
  }
}

/** Waits for every start-up (so none is left running behind a teardown), then throws the first failure. */
async function settleAll(starts: Array<Promise<unknown>>): Promise<void> {
  const results = await Promise.allSettled(starts);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

function up(ns: Namespace, dev: string, cidr: string): void {
  ns.exec("ip", ["addr", "add", cidr, "dev", dev]);
  ns.exec("ip", ["link", "set", dev, "up"]);
}

/** `wg set IFACE private-key FILE ...rest`: the key goes through a private temporary file. */
function setKey(ns: Namespace, iface: string, privateKey: string, rest: string[]): void {
  const dir = mkdtempSync(join(tmpdir(), "e2e-fleet-wg-"));
  try {
    const file = join(dir, "key");
    writeFileSync(file, privateKey, { mode: 0o600 });
    ns.exec("wg", ["set", iface, "private-key", file, ...rest]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
