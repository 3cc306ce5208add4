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

/** The table name for a TUN device: `fake_tcp_` + the name with non-word characters as `_`. */
export function tableName(tun: string): string {
  return `fake_tcp_${tun.replace(/[^A-Za-z0-9_]/g, "_")}`;
}

/** Quotes an interface name for nft (names cannot contain quotes or whitespace). */
function quoted(name: string): string {
  return `"${name}"`;
}

/** The rule lines (without the chain around them) for `spec`, one rule per line. */
export function ruleLines(spec: RulesSpec): string[] {
  const lines: string[] = [];
  if (spec.role === "client") {
    const out = `oifname != ${quoted(spec.tun)}`;
    if (spec.tunnel4) lines.push(`${out} ip saddr ${spec.tunnel4} masquerade`);
    if (spec.tunnel6) lines.push(`${out} ip6 saddr ${spec.tunnel6} masquerade`);
  } else {
    // Packets coming out of the TUN are the stack's own replies: never DNAT them, even when
    // their destination port happens to equal the listen port.
    const match = `iifname != ${quoted(spec.tun)} tcp dport ${spec.port}`;
    if (spec.tunnel4) lines.push(`${match} dnat ip to ${spec.tunnel4}`);
    if (spec.tunnel6) lines.push(`${match} dnat ip6 to ${spec.tunnel6}`);
  }
  return lines;
}

/** The complete table definition for `spec`, in nft's own syntax. */
export function buildRuleset(spec: RulesSpec): string {
  const table = tableName(spec.tun);
  const chain =
    spec.role === "client"
      ? { name: "postrouting", hook: "postrouting", priority: "srcnat" }
      : { name: "prerouting", hook: "prerouting", priority: "dstnat" };
  const rules = ruleLines(spec).map((line) => `\t\t${line}\n`);
  return (
    `table inet ${table} {\n` +
    `\tchain ${chain.name} {\n` +
    `\t\ttype nat hook ${chain.hook} priority ${chain.priority}; policy accept;\n` +
    rules.join("") +
    "\t}\n" +
    "}\n"
  );
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
