/**
 * The nftables rules the programs add to the host, and their atomic application.
 *
 * Everything lives in one table of our own, `inet fake_tcp_<tun>`, so that removing the
 * table removes all of it and nothing else on the host is touched. The table is written
 * with `nft -f -` (no shell) as one transaction that first deletes any table of the same
 * name, so a table left by a crashed run is replaced atomically.
 *
 * Server: the tunnel's segments are not tracked by conntrack at all. A conntrack entry is
 * state that a packet from outside can change: a forged RST that conntrack accepts (its seq
 * in the window, or sent with a TTL that expires at this host after conntrack saw it) moves
 * the entry to CLOSE with a 10 s timer, although the stack never saw the RST; when that timer
 * runs out, the NAT binding is gone and the stack's next segment leaves unmapped, and the
 * connection ends although neither end closed it. And tracking costs a lookup per packet.
 * Instead the rules rewrite addresses statelessly: a segment to the listen port on one of the
 * host's own addresses is marked untracked and its destination set to the stack's address;
 * the client's address and port are remembered with the local address it connected to (a
 * dynamic map whose entries live as long as the connection can idle); the stack's segments get
 * that address back as their source on the way out. Nothing a packet says about TCP state
 * changes what the rules do; only the stack decides whether a connection has ended.
 *
 * Client: the same idea the other way round, in place of a masquerade through conntrack. A
 * masquerading conntrack entry is state that anyone who knows the client's public tuple can
 * move from outside (an in-window forgery towards the client shifts its idea of the flow; it
 * then finds the server's real segments invalid, stops un-NATting them, and the host's own
 * TCP answers them with RSTs: both ends close). Instead the stack's segments are not tracked:
 * on the way in from the TUN their flow (server address and port, the stack's port) is
 * remembered in a dynamic set, and on the way out their source becomes the host's address
 * towards that server (a map the program fills before each connection, from the route the
 * kernel chooses: a new address after roaming is picked up by the reconnect). Segments from
 * a remembered server end to a remembered port on one of the host's own addresses are not
 * tracked either and go to the stack's address; whatever the host itself would send on such a
 * flow (its TCP's RST for a segment it does not know) is dropped.
 */
import { errnoCode, UsageError } from "./errors.js";
import { runCommand } from "./run-command.js";

/**
 * What the client needs: its stack's own (tunnel-side) addresses rewritten statelessly to the
 * host's address towards the server on egress, and the server's segments back to them.
 */
export interface ClientRulesSpec {
  readonly role: "client";
  /** TUN device name (the rules never rewrite traffic leaving through it). */
  readonly tun: string;
  /** The stack's IPv4 address (`--tun-peer`); omitted when IPv4 is unused. */
  readonly tunnel4?: string;
  /** The stack's IPv6 address (`--tun-peer6`); omitted when IPv6 is unused. */
  readonly tunnel6?: string;
  /**
   * How long a flow is remembered after the stack's last segment on it (seconds): longer
   * than a connection can idle, so that the server's segments always reach the stack.
   */
  readonly flowTimeoutSeconds?: number;
}

/**
 * The client's map of server address -> the host's source address towards it, per family
 * (filled by {@link EgressMap}-style updates: see `egress-map.ts`).
 */
export const EGRESS_MAP = { 4: "egress4", 6: "egress6" } as const;

/** What the server needs: its public TCP port, on the host's own addresses, to the stack. */
export interface ServerRulesSpec {
  readonly role: "server";
  readonly tun: string;
  /** The TCP port the server listens on (`--listen`). */
  readonly port: number;
  readonly tunnel4?: string;
  readonly tunnel6?: string;
  /**
   * How long a client's address is remembered after its last segment (seconds): longer than
   * a connection can idle (the idle timeout), so that the stack can always answer.
   */
  readonly flowTimeoutSeconds?: number;
  /**
   * Port sharing (`--share`): the port belongs to a TCP service of the host too. Only
   * connections the verdict program admitted (their SYN marked with {@link SHARE_MARK} by its
   * NFQUEUE verdict) are rewritten to the stack; every other segment is left to the host.
   */
  readonly share?: boolean;
}

/**
 * The packet-mark bit with which the share verdict admits a SYN to the tunnel (the rest of the
 * mark is kept; the bit is cleared again before the packet goes on).
 */
export const SHARE_MARK = 0x0800_0000;

/** Default of {@link ServerRulesSpec.flowTimeoutSeconds}: the default idle timeout and a minute. */
export const DEFAULT_FLOW_TIMEOUT_SECONDS = 240;

/**
 * Clients remembered at once per family. A full map refuses new clients (their segments then
 * reach the host's TCP, which resets them: they learn it at once); entries of a SYN flood
 * leave after the flow timeout.
 */
export const FLOW_MAP_SIZE = 262_144;

export type RulesSpec = ClientRulesSpec | ServerRulesSpec;

/** What `--tun` accepts (see `parseTunName`): these characters only, so nothing needs escaping. */
const SAFE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * The table name for a TUN device: `fake_tcp_` + the name itself. nft identifiers take
 * letters, digits, "_", "-" and "." after a letter, so every valid `--tun` maps to its own
 * table (a-b, a.b and a_b do not collide).
 */
export function tableName(tun: string): string {
  return `fake_tcp_${checkedName(tun)}`;
}

/** Refuses a name that would not be safe inside an nft script (a bug if it ever happens). */
function checkedName(name: string): string {
  if (!SAFE_NAME.test(name))
    throw new UsageError(`--tun: ${JSON.stringify(name)} cannot be used in nft rules`);
  return name;
}

/** Quotes an interface name for nft. */
function quoted(name: string): string {
  return `"${checkedName(name)}"`;
}

/** One base chain of the table. */
export interface ChainSpec {
  readonly name: string;
  readonly type: "nat" | "filter";
  readonly hook: "prerouting" | "postrouting" | "forward" | "input" | "output";
  readonly priority: "raw" | "raw - 10" | "raw + 10" | "dstnat" | "srcnat" | "filter";
  readonly rules: readonly string[];
}

/** A map of the table, in nft's own syntax (its body lines). */
export interface MapSpec {
  readonly name: string;
  /** A set (keys only) rather than a map. */
  readonly set?: boolean;
  readonly lines: readonly string[];
}

/** The maps of the table for `spec`: the server's remembered clients, per family. */
export function maps(spec: RulesSpec): MapSpec[] {
  if (spec.role === "client") return clientMaps(spec);
  const timeout = spec.flowTimeoutSeconds ?? DEFAULT_FLOW_TIMEOUT_SECONDS;
  const map = (name: string, key: string, addr: string): MapSpec => ({
    name,
    lines: [
      `type ${key} : ${addr}`,
      "flags dynamic,timeout",
      `timeout ${timeout}s`,
      `size ${FLOW_MAP_SIZE}`,
    ],
  });
  const out: MapSpec[] = [];
  // IPv4: the client's port and address (the port first: nft 1.0.6 fails an assertion on
  // the other order). IPv6: the address alone, as nft 1.0.6 writes a wrong key for an IPv6
  // address in a concatenation with data; IPv6 clients rarely share an address, and two
  // that do only conflict when they reach different addresses of this host.
  if (spec.tunnel4) out.push(map("clients4", "inet_service . ipv4_addr", "ipv4_addr"));
  if (spec.tunnel6) out.push(map("clients6", "ipv6_addr", "ipv6_addr"));
  // Sharing: a connection is known by its whole client end, so that other connections from
  // the same IPv6 address reach the host's service (a set: nft 1.0.6 handles this key
  // when no data is attached).
  if (spec.tunnel6 && spec.share === true) {
    const [, ...rest] = map("tunnel6", "", "").lines;
    out.push({ name: "tunnel6", set: true, lines: ["type ipv6_addr . inet_service", ...rest] });
  }
  return out;
}

/** The chains of the table for `spec`, with their rules. */
export function chains(spec: RulesSpec): ChainSpec[] {
  const tun = quoted(spec.tun);
  if (spec.role === "client") return clientChains(spec);
  // Segments to the listen port on one of this host's own addresses (never a forwarded
  // packet for another machine, never the stack's own segments coming out of the TUN).
  const port = spec.port;
  const inbound = `iifname != ${tun} tcp dport ${port} fib daddr type local`;
  const fromStack = `oifname != ${tun}`;
  const raw: string[] = [];
  const out: string[] = [];
  const unmapped: string[] = [];
  if (spec.tunnel4) {
    raw.push(
      `${inbound} update @clients4 { tcp sport . ip saddr : ip daddr } notrack ip daddr set ${spec.tunnel4}`,
    );
    out.push(
      `${fromStack} ip saddr ${spec.tunnel4} tcp sport ${port} ip saddr set tcp dport . ip daddr map @clients4`,
    );
    unmapped.push(`${fromStack} ip saddr ${spec.tunnel4} tcp sport ${port} drop`);
  }
  if (spec.tunnel6) {
    raw.push(
      `${inbound} update @clients6 { ip6 saddr : ip6 daddr } notrack ip6 daddr set ${spec.tunnel6}`,
    );
    out.push(
      `${fromStack} ip6 saddr ${spec.tunnel6} tcp sport ${port} ip6 saddr set ip6 daddr map @clients6`,
    );
    unmapped.push(`${fromStack} ip6 saddr ${spec.tunnel6} tcp sport ${port} drop`);
  }
  // The stack's own segments are not tracked either.
  const stackOwn = `iifname ${tun} tcp sport ${port} notrack`;
  raw.push(stackOwn);
  if (spec.share === true)
    return [...sharedInbound(spec, inbound, stackOwn), outboundChain(out, unmapped)];
  return [
    { name: "inbound", type: "filter", hook: "prerouting", priority: "raw", rules: raw },
    outboundChain(out, unmapped),
  ];
}

/**
 * A segment of the stack for a client that is not (or no longer) remembered would leave with
 * the private tunnel address: dropped instead (the client's next segment maps it).
 */
function outboundChain(out: readonly string[], unmapped: readonly string[]): ChainSpec {
  return {
    name: "outbound",
    type: "filter",
    hook: "postrouting",
    priority: "srcnat",
    rules: [...out, ...unmapped],
  };
}

/**
 * The inbound chains of port sharing. Between them, at priority raw, the NFQUEUE rule (an
 * iptables-nft rule, see `share-rules.ts`: this kernel's nft has no queue statement) hands
 * every SYN to the port on a local address that is still addressed to the host to the verdict
 * program. Before it (`raw - 10`), segments of connections already admitted are rewritten to
 * the stack, so they never reach the queue (their destination is no longer local). After it
 * (`raw + 10`), a SYN the verdict marked is admitted: its client end is remembered and it is
 * rewritten like the rest of its connection. Anything else goes on untouched to conntrack and
 * the host's service. All of it before conntrack (priority -200), so the decision is taken
 * before any conntrack or NAT state exists, and kept in the maps for the connection's life.
 */
function sharedInbound(spec: ServerRulesSpec, inbound: string, stackOwn: string): ChainSpec[] {
  const known: string[] = [];
  const admit: string[] = [];
  const marked = `meta mark & ${hex(SHARE_MARK)} == ${hex(SHARE_MARK)} meta mark set meta mark & ${hex(~SHARE_MARK >>> 0)}`;
  if (spec.tunnel4) {
    const rewrite = `update @clients4 { tcp sport . ip saddr : ip daddr } notrack ip daddr set ${spec.tunnel4}`;
    known.push(`${inbound} tcp sport . ip saddr @clients4 ${rewrite}`);
    admit.push(`${inbound} ${marked} ${rewrite}`);
  }
  if (spec.tunnel6) {
    const rewrite = `update @tunnel6 { ip6 saddr . tcp sport } update @clients6 { ip6 saddr : ip6 daddr } notrack ip6 daddr set ${spec.tunnel6}`;
    known.push(`${inbound} ip6 saddr . tcp sport @tunnel6 ${rewrite}`);
    admit.push(`${inbound} ${marked} ${rewrite}`);
  }
  return [
    {
      name: "inbound",
      type: "filter",
      hook: "prerouting",
      priority: "raw - 10",
      rules: [...known, stackOwn],
    },
    { name: "admit", type: "filter", hook: "prerouting", priority: "raw + 10", rules: admit },
  ];
}

/**
 * The client's maps: per family, the host's source address towards each server (filled by
 * the program) and the flows of the stack (filled by its own segments, dynamic).
 */
function clientMaps(spec: ClientRulesSpec): MapSpec[] {
  const timeout = spec.flowTimeoutSeconds ?? DEFAULT_FLOW_TIMEOUT_SECONDS;
  const flows = (name: string, addr: string): MapSpec => ({
    name,
    set: true,
    lines: [
      // Server address, server port, the stack's port.
      `type ${addr} . inet_service . inet_service`,
      "flags dynamic,timeout",
      `timeout ${timeout}s`,
      `size ${FLOW_MAP_SIZE}`,
    ],
  });
  const out: MapSpec[] = [];
  if (spec.tunnel4) {
    out.push({ name: EGRESS_MAP[4], lines: ["type ipv4_addr : ipv4_addr"] });
    out.push(flows("flows4", "ipv4_addr"));
  }
  if (spec.tunnel6) {
    out.push({ name: EGRESS_MAP[6], lines: ["type ipv6_addr : ipv6_addr"] });
    out.push(flows("flows6", "ipv6_addr"));
  }
  return out;
}

/**
 * The client's chains. `inbound` (before conntrack): the stack's segments from the TUN are
 * remembered and not tracked; the server's segments of a remembered flow, to one of the
 * host's own addresses, are not tracked and go to the stack's address (routed into the TUN).
 * `outbound`: the stack's segments leave with the host's address towards their server, or not
 * at all (never with the private tunnel address). `local`: nothing the host itself sends on a
 * remembered flow leaves (its TCP would answer a segment that reached it with an RST).
 */
function clientChains(spec: ClientRulesSpec): ChainSpec[] {
  const tun = quoted(spec.tun);
  const inbound: string[] = [];
  const outbound: string[] = [];
  const unmapped: string[] = [];
  const local: string[] = [];
  const families = [
    { tunnel: spec.tunnel4, ip: "ip", flows: "flows4", egress: EGRESS_MAP[4] },
    { tunnel: spec.tunnel6, ip: "ip6", flows: "flows6", egress: EGRESS_MAP[6] },
  ];
  for (const { tunnel, ip, flows, egress } of families) {
    if (!tunnel) continue;
    inbound.push(
      `iifname ${tun} ${ip} saddr ${tunnel} update @${flows} { ${ip} daddr . tcp dport . tcp sport } notrack`,
    );
    inbound.push(
      `iifname != ${tun} ${ip} saddr . tcp sport . tcp dport @${flows} fib daddr type local notrack ${ip} daddr set ${tunnel}`,
    );
    outbound.push(
      `oifname != ${tun} ${ip} saddr ${tunnel} ${ip} saddr set ${ip} daddr map @${egress}`,
    );
    unmapped.push(`oifname != ${tun} ${ip} saddr ${tunnel} drop`);
    local.push(`${ip} daddr . tcp dport . tcp sport @${flows} drop`);
  }
  return [
    { name: "inbound", type: "filter", hook: "prerouting", priority: "raw", rules: inbound },
    outboundChain(outbound, unmapped),
    { name: "local", type: "filter", hook: "output", priority: "raw", rules: local },
  ];
}

function hex(value: number): string {
  return `0x${value.toString(16).padStart(8, "0")}`;
}

/** Every rule of the table for `spec`, one per line, in table order (for logs). */
export function ruleLines(spec: RulesSpec): string[] {
  return chains(spec).flatMap((chain) => chain.rules);
}

/** The complete table definition for `spec`, in nft's own syntax. */
export function buildRuleset(spec: RulesSpec): string {
  const declared = maps(spec).map(
    (map) =>
      `\t${map.set === true ? "set" : "map"} ${map.name} {\n${map.lines.map((line) => `\t\t${line}\n`).join("")}\t}\n`,
  );
  const body = chains(spec).map(
    (chain) =>
      `\tchain ${chain.name} {\n` +
      `\t\ttype ${chain.type} hook ${chain.hook} priority ${chain.priority}; policy accept;\n` +
      chain.rules.map((rule) => `\t\t${rule}\n`).join("") +
      "\t}\n",
  );
  return `table inet ${tableName(spec.tun)} {\n${[...declared, ...body].join("")}}\n`;
}

/**
 * The `nft -f -` script that installs `spec` atomically: declaring the table first makes
 * the delete valid when no stale table exists, and the whole file is one transaction.
 */
export function buildApplyScript(spec: RulesSpec): string {
  const table = tableName(spec.tun);
  return `table inet ${table}\ndelete table inet ${table}\n${buildRuleset(spec)}`;
}

/** How to run nft: `["nft"]` on the host, or e.g. `["ip", "netns", "exec", NS, "nft"]`. */
export type NftCommand = readonly string[];

const NFT_TIMEOUT_MS = 1_500;

/** Turns an nft failure into a one-line message naming the problem and the fix. */
export function nftFailure(action: string, stderr: string): UsageError {
  const detail = stderr.split("\n").find((l) => l.trim().length > 0) ?? "unknown error";
  if (/Operation not permitted|Permission denied/i.test(stderr)) {
    return new UsageError(
      `nft: ${action} failed: permission denied; run as root or with CAP_NET_ADMIN, or use --no-auto-rules`,
    );
  }
  return new UsageError(
    `nft: ${action} failed: ${detail.trim()}; check nftables support or use --no-auto-rules`,
  );
}

/** Runs nft with `args` (and `input` on stdin); a missing nft is a `UsageError`. */
export async function runNft(nft: NftCommand, args: readonly string[], input?: string) {
  try {
    return await runCommand([...nft, ...args], input, NFT_TIMEOUT_MS);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") {
      throw new UsageError(
        "nft (nftables) not found: install nftables, or run with --no-auto-rules and add the rules yourself",
      );
    }
    throw err;
  }
}

/** True for nft's "no such table/object" answers. */
export function nftNotFound(stderr: string): boolean {
  return /No such file or directory|does not exist/i.test(stderr);
}

/** The names of the inet tables of every instance of the programs in this namespace. */
export async function programTables(nft: NftCommand = ["nft"]): Promise<string[]> {
  const result = await runNft(nft, ["list", "tables", "inet"]);
  if (result.code !== 0) throw nftFailure("listing tables", result.stderr);
  return result.stdout
    .split("\n")
    .map((line) => /^table inet (fake_tcp_\S+)/.exec(line.trim())?.[1])
    .filter((name): name is string => name !== undefined);
}

/** The nftables table of one running program: install, inspect, remove. */
export class NftTable {
  /** The table name, e.g. `fake_tcp_tun0`. */
  readonly name: string;

  constructor(
    readonly spec: RulesSpec,
    private readonly nft: NftCommand = ["nft"],
  ) {
    this.name = tableName(spec.tun);
  }

  private run(args: string[], input?: string) {
    return runNft(this.nft, args, input);
  }

  /** True when a table of this name exists (e.g. left behind by a crashed run). */
  async exists(): Promise<boolean> {
    const result = await this.run(["list", "table", "inet", this.name]);
    if (result.code === 0) return true;
    if (/No such file or directory|does not exist/i.test(result.stderr)) return false;
    throw nftFailure(`listing table inet ${this.name}`, result.stderr);
  }

  /**
   * Installs the table in one transaction, replacing any stale table of the same name.
   * Resolves to whether a stale table was found (and removed).
   */
  async apply(): Promise<{ staleRemoved: boolean }> {
    const staleRemoved = await this.exists();
    const result = await this.run(["-f", "-"], buildApplyScript(this.spec));
    if (result.code !== 0) throw nftFailure(`adding table inet ${this.name}`, result.stderr);
    return { staleRemoved };
  }

  /** Deletes the table. Resolves to false when it was already gone. */
  async remove(): Promise<boolean> {
    const result = await this.run(["delete", "table", "inet", this.name]);
    if (result.code === 0) return true;
    if (/No such file or directory|does not exist/i.test(result.stderr)) return false;
    throw nftFailure(`deleting table inet ${this.name}`, result.stderr);
  }
}
