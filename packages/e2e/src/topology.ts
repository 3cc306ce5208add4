/**
 * The rig's network: five namespaces wired as a home LAN behind a NAT router, a WAN, and a
 * server with an application host behind it.
 *
 *   A (app client) ─┐
 *                   ├─ br0 ─ R (NAT router) wan0 ──── wan0 S (tunnel server) app0 ──── app0 B (app server)
 *   C (tunnel cl.) ─┘   10.201.1.0/24          10.201.2.0/24                  10.201.3.0/24
 *
 * Nothing links these namespaces to the host and no namespace has a default route, so no
 * packet can leave them. R masquerades LAN→WAN; in "tunnel" mode its WAN side passes only TCP.
 *
 * With `wanAttacker`, a sixth namespace X sits on the WAN: R and S are linked through a bridge
 * in X instead of directly, so X sees the WAN and can put any packet on it, with any source,
 * towards either side:
 *
 *   R wan0 ──── wanr X (brwan, 10.201.2.66) wans ──── wan0 S
 */

import { ADDR, IFACE, type RigMode } from "./addresses.js";
import { linkVeth, Namespace } from "./namespace.js";
import { routerRuleset } from "./router.js";

export { ADDR, IFACE, type RigMode };

export interface TopologyOptions {
  mode: RigMode;
  /**
   * Sysctls applied in R's namespace after conntrack is loaded, e.g.
   * `{ "net.netfilter.nf_conntrack_tcp_timeout_unacknowledged": 3 }`.
   */
  routerSysctls?: Record<string, string | number>;
  /**
   * When false (default), R tracks TCP strictly like a stateful firewall: no mid-stream pickup
   * (`nf_conntrack_tcp_loose=0`) and invalid packets are dropped, so a flow whose conntrack
   * entry expired or was flushed is dead until it is re-established with a new SYN.
   */
  looseTcp?: boolean;
  /** Prefix of namespace names (default "ftr"); a random suffix makes them unique. */
  prefix?: string;
  /**
   * Add the attacker namespace X on the WAN (default false). S routes `ADDR.attackerPrefix`
   * to X, so an injector there can complete handshakes from addresses of its own.
   */
  wanAttacker?: boolean;
}

export class Topology {
  readonly appClient: Namespace;
  readonly tunnelClient: Namespace;
  readonly router: Namespace;
  readonly tunnelServer: Namespace;
  readonly appServer: Namespace;
  /** The WAN attacker X, when `wanAttacker` was asked for. */
  readonly attacker: Namespace | null = null;
  readonly mode: RigMode;

  constructor(readonly options: TopologyOptions) {
    const p = options.prefix ?? "ftr";
    this.mode = options.mode;
    this.appClient = new Namespace(`${p}a`, "A");
    try {
      this.tunnelClient = new Namespace(`${p}c`, "C");
      this.router = new Namespace(`${p}r`, "R");
      this.tunnelServer = new Namespace(`${p}s`, "S");
      this.appServer = new Namespace(`${p}b`, "B");
      if (options.wanAttacker) this.attacker = new Namespace(`${p}x`, "X");
      this.wire();
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  /** All namespaces, in the order A, C, R, S, B (then X, when there is one). */
  get namespaces(): Namespace[] {
    return [
      this.appClient,
      this.tunnelClient,
      this.router,
      this.tunnelServer,
      this.appServer,
      this.attacker,
    ].filter((ns): ns is Namespace => Boolean(ns));
  }

  private wire(): void {
    const { appClient: a, tunnelClient: c, router: r, tunnelServer: s, appServer: b } = this;
    // LAN: a bridge in R with A and C attached.
    r.exec("ip", ["link", "add", IFACE.bridge, "type", "bridge"]);
    r.exec("ip", ["addr", "add", `${ADDR.routerLan}/24`, "dev", IFACE.bridge]);
    r.exec("ip", ["link", "set", IFACE.bridge, "up"]);
    linkVeth(a, IFACE.lan, r, "lana");
    linkVeth(c, IFACE.lan, r, "lanc");
    for (const port of ["lana", "lanc"]) {
      r.exec("ip", ["link", "set", port, "master", IFACE.bridge]);
      r.exec("ip", ["link", "set", port, "up"]);
    }
    up(a, IFACE.lan, `${ADDR.appClient}/24`);
    up(c, IFACE.lan, `${ADDR.tunnelClient}/24`);
    // WAN: R <-> S, directly or through the attacker's switch.
    if (this.attacker) this.wireAttacker(this.attacker);
    else linkVeth(r, IFACE.wan, s, IFACE.wan);
    up(r, IFACE.wan, `${ADDR.routerWan}/24`);
    up(s, IFACE.wan, `${ADDR.tunnelServer}/24`);
    // Behind the server: S <-> B.
    linkVeth(s, IFACE.back, b, IFACE.back);
    up(s, IFACE.back, `${ADDR.serverBack}/24`);
    up(b, IFACE.back, `${ADDR.appServer}/24`);

    // Routes: only the rig's own prefixes, never a default route.
    a.exec("ip", ["route", "add", ADDR.wanPrefix, "via", ADDR.routerLan]);
    a.exec("ip", ["route", "add", ADDR.backPrefix, "via", ADDR.routerLan]);
    c.exec("ip", ["route", "add", ADDR.wanPrefix, "via", ADDR.routerLan]);
    r.exec("ip", ["route", "add", ADDR.backPrefix, "via", ADDR.tunnelServer]);
    s.exec("ip", ["route", "add", ADDR.spoofPrefix, "via", ADDR.routerWan]);
    b.exec("ip", ["route", "add", ADDR.wanPrefix, "via", ADDR.serverBack]);
    if (this.attacker) s.exec("ip", ["route", "add", ADDR.attackerPrefix, "via", ADDR.attacker]);

    // Forwarding where packets are routed; rp_filter off so the rig's asymmetric test
    // traffic (spoofed floods) is judged by the programs, not dropped by the kernel first.
    for (const ns of [r, s, this.attacker]) ns?.sysctl({ "net.ipv4.ip_forward": 1 });
    for (const ns of this.namespaces) {
      ns.sysctl({ "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0 });
    }
    // No IPv6 on the rig's links (no link-local chatter in WAN captures). C and S keep IPv6
    // enabled by default because the programs put IPv6 addresses on their TUN devices.
    const links: Array<[Namespace, string[]]> = [
      [a, [IFACE.lan]],
      [c, [IFACE.lan]],
      [r, [IFACE.bridge, "lana", "lanc", IFACE.wan]],
      [s, [IFACE.wan, IFACE.back]],
      [b, [IFACE.back]],
    ];
    for (const [ns, ifaces] of links) {
      for (const dev of ifaces) ns.sysctl({ [`net.ipv6.conf.${dev}.disable_ipv6`]: 1 });
    }
    for (const ns of [a, r, b]) ns.sysctl({ "net.ipv6.conf.default.disable_ipv6": 1 });

    // R's firewall loads conntrack in its namespace; then its per-namespace sysctls exist.
    r.exec("nft", ["-f", "-"], routerRuleset(this.mode));
    r.sysctl({ "net.netfilter.nf_conntrack_tcp_loose": this.options.looseTcp ? 1 : 0 });
    if (this.options.routerSysctls) r.sysctl(this.options.routerSysctls);
  }

  /**
   * The WAN through X: a bridge with one port to R and one to S (R and S keep their interface
   * names, so every rule and capture on them is unchanged). X forwards what its injector
   * writes into its TUN device onto the WAN, and routes replies to the attacker's prefix back
   * into that device (the injector adds that route once its device exists).
   */
  private wireAttacker(x: Namespace): void {
    x.exec("ip", ["link", "add", IFACE.wanSwitch, "type", "bridge"]);
    linkVeth(this.router, IFACE.wan, x, IFACE.wanToRouter);
    linkVeth(this.tunnelServer, IFACE.wan, x, IFACE.wanToServer);
    for (const port of [IFACE.wanToRouter, IFACE.wanToServer]) {
      x.exec("ip", ["link", "set", port, "master", IFACE.wanSwitch]);
      x.exec("ip", ["link", "set", port, "up"]);
    }
    up(x, IFACE.wanSwitch, `${ADDR.attacker}/24`);
    // A plain switch: bridged frames skip X's netfilter hooks (br_netfilter may be loaded on
    // the host), and X sends no redirects for the spoofed packets it forwards.
    for (const family of ["iptables", "ip6tables"]) {
      const path = `/proc/sys/net/bridge/bridge-nf-call-${family}`;
      x.exec("sh", ["-c", '[ ! -e "$1" ] || printf "0\\n" > "$1"', "sysctl", path]);
    }
    x.sysctl({
      "net.ipv4.conf.all.send_redirects": 0,
      "net.ipv4.conf.default.send_redirects": 0,
      "net.ipv6.conf.default.disable_ipv6": 1,
    });
    for (const dev of [IFACE.wanSwitch, IFACE.wanToRouter, IFACE.wanToServer])
      x.sysctl({ [`net.ipv6.conf.${dev}.disable_ipv6`]: 1 });
  }

  /** Removes every namespace (and every process inside). Idempotent. */
  destroy(): void {
    for (const ns of this.namespaces) ns.destroy();
  }
}

function up(ns: Namespace, dev: string, cidr: string): void {
  ns.exec("ip", ["addr", "add", cidr, "dev", dev]);
  ns.exec("ip", ["link", "set", dev, "up"]);
}
