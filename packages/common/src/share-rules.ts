/**
 * Port sharing (`--share`): the rule that hands new SYNs to the verdict program.
 *
 * nftables has a `queue` statement, but kernels built without CONFIG_NFT_QUEUE reject it
 * ("No such file or directory"); the xtables NFQUEUE target works on them and on every other
 * kernel, so the one queueing rule is added with iptables-nft / ip6tables-nft (an nft rule
 * in the table `ip raw` / `ip6 raw`, chain PREROUTING, priority raw), between the two inbound
 * chains of our own table (see `nft.ts`). `--queue-bypass`: with no program bound to the
 * queue (it exited or crashed), SYNs pass on to the host's service instead of being dropped.
 * The rule carries a comment naming our table, so a rule left by a crashed run is found and
 * removed before the new one is added.
 */
import { errnoCode, UsageError } from "./errors.js";
import { runCommand } from "./run-command.js";

/** What the queueing rule matches and where it sends it. */
export interface ShareQueueSpec {
  readonly tun: string;
  readonly port: number;
  /** NFQUEUE number (0..65535). */
  readonly queue: number;
  /** The families in use: iptables-nft for 4, ip6tables-nft for 6. */
  readonly families: readonly (4 | 6)[];
}

/** Default `--share-queue`: "FT" in ASCII. */
export const DEFAULT_SHARE_QUEUE = 0x4654;

const TIMEOUT_MS = 5_000;
/** Stale copies removed at most (each start removes all of them; more means a loop). */
const MAX_STALE = 16;

/** The rule, as iptables arguments after `-I` / `-D` / `-C` and the chain. */
export function queueRuleArgs(spec: ShareQueueSpec): string[] {
  return [
    "!",
    "-i",
    spec.tun,
    "-p",
    "tcp",
    "--dport",
    String(spec.port),
    "--tcp-flags",
    "SYN,ACK,RST,FIN",
    "SYN",
    "-m",
    "addrtype",
    "--dst-type",
    "LOCAL",
    "-m",
    "comment",
    "--comment",
    `fake_tcp_${spec.tun} share`,
    "-j",
    "NFQUEUE",
    "--queue-num",
    String(spec.queue),
    "--queue-bypass",
  ];
}

/** The rule as one line (for logs and docs). */
export function queueRuleLine(spec: ShareQueueSpec, family: 4 | 6): string {
  return `${family === 4 ? "iptables-nft" : "ip6tables-nft"} -t raw -I PREROUTING ${queueRuleArgs(
    spec,
  )
    .map((a) => (a.includes(" ") ? `"${a}"` : a))
    .join(" ")}`;
}

/** The queueing rules of one program: add (replacing stale copies) and remove. */
export class ShareQueueRules {
  /** `prefix`: what runs before the command, e.g. `["ip", "netns", "exec", NS]`. */
  constructor(
    readonly spec: ShareQueueSpec,
    private readonly prefix: readonly string[] = [],
  ) {}

  private async run(family: 4 | 6, action: "-I" | "-D", input: string[]) {
    const command = family === 4 ? "iptables-nft" : "ip6tables-nft";
    try {
      return await runCommand(
        [...this.prefix, command, "-w", "2", "-t", "raw", action, "PREROUTING", ...input],
        "",
        TIMEOUT_MS,
      );
    } catch (err) {
      if (errnoCode(err) === "ENOENT") {
        throw new UsageError(
          `--share: ${command} not found: install iptables (the nft backend), or run without --share`,
        );
      }
      throw err;
    }
  }

  /** Removes every copy of the rule; resolves to how many were found. */
  async remove(): Promise<number> {
    let removed = 0;
    for (const family of this.spec.families) {
      for (let i = 0; i < MAX_STALE; i++) {
        const result = await this.run(family, "-D", queueRuleArgs(this.spec));
        if (result.code !== 0) break;
        removed++;
      }
    }
    return removed;
  }

  /** Adds the rule per family after removing stale copies; resolves to the stale count. */
  async apply(): Promise<number> {
    const stale = await this.remove();
    for (const family of this.spec.families) {
      const result = await this.run(family, "-I", queueRuleArgs(this.spec));
      if (result.code !== 0) {
        const detail = result.stderr.split("\n").find((l) => l.trim().length > 0) ?? "failed";
        const fix = /permission denied|not permitted/i.test(result.stderr)
          ? "run as root or with CAP_NET_ADMIN"
          : "check that the kernel has the NFQUEUE, addrtype and comment xtables modules";
        throw new UsageError(`--share: adding the NFQUEUE rule failed: ${detail.trim()}; ${fix}`);
      }
    }
    return stale;
  }
}
