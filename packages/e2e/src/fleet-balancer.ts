/**
 * The fleet's layer-4 balancer: an nftables ruleset that spreads fake-TCP flows to a virtual
 * address over the live servers with DNAT, the way kube-proxy's nftables mode does. The
 * balancer's conntrack keeps each flow on the server its first packet was sent to, so changing
 * the server list moves no established flow; the health checker (`tools/health-checker.ts`)
 * rewrites the list and forgets the flows of a server it removed.
 *
 * Shared by the rig, the health checker and docs/scaling.md (which prints it).
 */

/** The balancer's nft table (in the balancer's own namespace). */
export const BALANCER_TABLE = "fleet_lb";

export interface BalancerConfig {
  /** The virtual address clients connect to (an address of the balancer). */
  vip: string;
  /** The servers' TCP port, the same on the virtual address and on every server. */
  port: number;
}

/**
 * The rule that picks a server for a new flow: round robin over `servers` (`numgen inc`),
 * looked at only for a flow's first packet (conntrack NATs the rest). No servers: no rule,
 * and the `local` chain drops what reaches the balancer itself.
 */
export function pickRule(config: BalancerConfig, servers: readonly string[]): string {
  if (servers.length === 0) return "";
  const match = `ip daddr ${config.vip} tcp dport ${config.port}`;
  if (servers.length === 1) return `${match} dnat to ${servers[0]}`;
  const map = servers.map((s, i) => `${i} : ${s}`).join(", ");
  return `${match} dnat to numgen inc mod ${servers.length} map { ${map} }`;
}

/**
 * The whole table: the `pick` chain (DNAT), a `guard` that drops segments conntrack finds
 * invalid (not NATed, they would reach the balancer's own TCP, whose RST a client would
 * believe), and a `local` chain that drops whatever still reaches the balancer at the
 * virtual port (no server live).
 */
export function balancerRuleset(config: BalancerConfig, servers: readonly string[]): string {
  const match = `ip daddr ${config.vip} tcp dport ${config.port}`;
  return `table ip ${BALANCER_TABLE} {
  chain pick {
    type nat hook prerouting priority dstnat; policy accept;
    ${pickRule(config, servers)}
  }
  chain guard {
    type filter hook prerouting priority mangle; policy accept;
    ${match} ct state invalid counter drop
  }
  chain local {
    type filter hook input priority filter; policy accept;
    ${match} counter drop
  }
}
`;
}

/** One `nft -f` transaction that replaces the server list and nothing else. */
export function replaceServers(config: BalancerConfig, servers: readonly string[]): string {
  const rule = pickRule(config, servers);
  return `flush chain ip ${BALANCER_TABLE} pick\n${rule ? `add rule ip ${BALANCER_TABLE} pick ${rule}\n` : ""}`;
}
