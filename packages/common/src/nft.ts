/**
 * The nftables rules the programs add to the host, and their atomic application.
 *
 * Everything lives in one table of our own, `inet fake_tcp_<tun>`, so that removing the
 * table removes all of it and nothing else on the host is touched. The table is written
 * with `nft -f -` (no shell) as one transaction that first deletes any table of the same
 * name, so a table left by a crashed run is replaced atomically.
 */
import { errnoCode, UsageError } from "./errors.js";
import { runCommand } from "./run-command.js";

/** What the client needs: masquerade of its stack's own (tunnel-side) addresses on egress. */
export interface ClientRulesSpec {
  readonly role: "client";
  /** TUN device name (the rules never rewrite traffic leaving through it). */
  readonly tun: string;
  /** The stack's IPv4 address (`--tun-peer`); omitted when IPv4 is unused. */
  readonly tunnel4?: string;
  /** The stack's IPv6 address (`--tun-peer6`); omitted when IPv6 is unused. */
  readonly tunnel6?: string;
}

/** What the server needs: DNAT of its public TCP port to the stack's own addresses. */
export interface ServerRulesSpec {
  readonly role: "server";
  readonly tun: string;
  /** The TCP port the server listens on (`--listen`). */
  readonly port: number;
  readonly tunnel4?: string;
  readonly tunnel6?: string;
}

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
  readonly hook: "prerouting" | "postrouting" | "forward" | "input";
  readonly priority: "dstnat" | "srcnat" | "filter";
  readonly rules: readonly string[];
}

/** The chains of the table for `spec`, with their rules. */
export function chains(spec: RulesSpec): ChainSpec[] {
  const tun = quoted(spec.tun);
  if (spec.role === "client") {
    const nat: string[] = [];
    if (spec.tunnel4) nat.push(`oifname != ${tun} ip saddr ${spec.tunnel4} masquerade`);
    if (spec.tunnel6) nat.push(`oifname != ${tun} ip6 saddr ${spec.tunnel6} masquerade`);
    return [
      { name: "postrouting", type: "nat", hook: "postrouting", priority: "srcnat", rules: nat },
      // conntrack does not NAT a segment it finds invalid (e.g. beyond the window it has
      // seen); forwarded as it is, it would leave with the private tunnel address.
      {
        name: "forward",
        type: "filter",
        hook: "forward",
        priority: "filter",
        rules: [`iifname ${tun} ct state invalid drop`],
      },
    ];
  }
  // Packets coming out of the TUN are the stack's own replies: never DNAT them, even when
  // their destination port happens to equal the listen port.
  const match = `iifname != ${tun} tcp dport ${spec.port}`;
  const nat: string[] = [];
  if (spec.tunnel4) nat.push(`${match} dnat ip to ${spec.tunnel4}`);
  if (spec.tunnel6) nat.push(`${match} dnat ip6 to ${spec.tunnel6}`);
  return [
    { name: "prerouting", type: "nat", hook: "prerouting", priority: "dstnat", rules: nat },
    // A segment conntrack finds invalid is not DNAT-ed and would reach the host's own TCP,
    // whose RST would reset the client's connection: drop it instead.
    {
      name: "input",
      type: "filter",
      hook: "input",
      priority: "filter",
      rules: [`tcp dport ${spec.port} ct state invalid drop`],
    },
  ];
}

/** Every rule of the table for `spec`, one per line, in table order (for logs). */
export function ruleLines(spec: RulesSpec): string[] {
  return chains(spec).flatMap((chain) => chain.rules);
}

/** The complete table definition for `spec`, in nft's own syntax. */
export function buildRuleset(spec: RulesSpec): string {
  const body = chains(spec).map(
    (chain) =>
      `\tchain ${chain.name} {\n` +
      `\t\ttype ${chain.type} hook ${chain.hook} priority ${chain.priority}; policy accept;\n` +
      chain.rules.map((rule) => `\t\t${rule}\n`).join("") +
      "\t}\n",
  );
  return `table inet ${tableName(spec.tun)} {\n${body.join("")}}\n`;
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
function nftFailure(action: string, stderr: string): UsageError {
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

  private async run(args: string[], input?: string) {
    try {
      return await runCommand([...this.nft, ...args], input, NFT_TIMEOUT_MS);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") {
        throw new UsageError(
          "nft (nftables) not found: install nftables, or run with --no-auto-rules and add the rules yourself",
        );
      }
      throw err;
    }
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
