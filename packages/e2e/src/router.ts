/**
 * The NAT router R: its nftables ruleset, and conntrack helpers run in its namespace.
 */

import { ADDR, IFACE, type RigMode } from "./addresses.js";
import type { Namespace } from "./namespace.js";

/** Name of the rig's nft table in R (R's namespace is the rig's own, so no collision). */
export const ROUTER_TABLE = "e2e_router";

/**
 * R's ruleset: a stateful home router. LAN→WAN is masqueraded and allowed; WAN→LAN only for
 * tracked flows; packets conntrack finds invalid are dropped. In "tunnel" mode everything but
 * TCP is dropped on the WAN side in both directions (forwarded and R's own traffic).
 */
export function routerRuleset(mode: RigMode): string {
  const tcpOnly = mode === "tunnel";
  const wan = `"${IFACE.wan}"`;
  const lan = `"${IFACE.bridge}"`;
  return `
table inet ${ROUTER_TABLE} {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ${tcpOnly ? `iifname ${wan} meta l4proto != tcp counter drop` : ""}
    ${tcpOnly ? `oifname ${wan} meta l4proto != tcp counter drop` : ""}
    ct state invalid counter drop
    # Bridged LAN traffic (A <-> C) reaches this hook when br_netfilter is loaded on the host.
    iifname ${lan} oifname ${lan} accept
    iifname ${lan} oifname ${wan} accept
    iifname ${wan} oifname ${lan} ct state established,related accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname ${wan} ct state established,related accept
    iifname ${wan} counter drop
  }
  chain output {
    type filter hook output priority filter; policy accept;
    ${tcpOnly ? `oifname ${wan} meta l4proto != tcp counter drop` : ""}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname ${wan} ip saddr ${ADDR.lanPrefix} masquerade
  }
}
`;
}

/** One conntrack entry, as `conntrack -L` prints it (the fields the tests use). */
export interface ConntrackEntry {
  proto: string;
  state: string | null;
  /** Seconds until expiry. */
  timeout: number;
  src: string;
  dst: string;
  sport: number | null;
  dport: number | null;
  /**
   * The reply direction's destination as the other end sees it: for a masqueraded flow, the
   * router's public address and port (null when the line has no reply tuple).
   */
  replyDst: string | null;
  replyDport: number | null;
  raw: string;
}

/** Lists R's conntrack table (or another namespace's). */
export function conntrackList(ns: Namespace): ConntrackEntry[] {
  let out: string;
  try {
    out = ns.exec("conntrack", ["-L"]);
  } catch {
    return [];
  }
  const entries: ConntrackEntry[] = [];
  for (const line of out.split("\n")) {
    const m =
      /^(\w+)\s+\d+\s+(\d+)\s+(?:([A-Z_]+)\s+)?src=(\S+) dst=(\S+)(?: sport=(\d+) dport=(\d+))?/.exec(
        line,
      );
    if (!m) continue;
    const reply =
      /src=\S+ dst=\S+ sport=\d+ dport=\d+ src=\S+ dst=(\S+) sport=\d+ dport=(\d+)/.exec(line);
    entries.push({
      proto: m[1],
      timeout: Number(m[2]),
      state: m[3] ?? null,
      src: m[4],
      dst: m[5],
      sport: m[6] ? Number(m[6]) : null,
      dport: m[7] ? Number(m[7]) : null,
      replyDst: reply ? reply[1] : null,
      replyDport: reply ? Number(reply[2]) : null,
      raw: line,
    });
  }
  return entries;
}

/** Deletes every conntrack entry in the namespace (like a router reboot losing its NAT table). */
export function conntrackFlush(ns: Namespace): void {
  ns.exec("conntrack", ["-F"]);
}

/** Packet counters of R's drop rules, keyed by the rule text (for reports). */
export function routerDropCounters(ns: Namespace): Array<{ rule: string; packets: number }> {
  const out = ns.exec("nft", ["list", "table", "inet", ROUTER_TABLE]);
  const result: Array<{ rule: string; packets: number }> = [];
  for (const line of out.split("\n")) {
    const m = /^\s*(.*?)\s*counter packets (\d+) bytes \d+ drop/.exec(line);
    if (m) result.push({ rule: m[1], packets: Number(m[2]) });
  }
  return result;
}
