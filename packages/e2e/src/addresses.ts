/** Addresses, interface names and modes of the rig (all inside its own namespaces). */

/** "direct": R lets UDP through (the reference path). "tunnel": R's WAN passes only TCP. */
export type RigMode = "direct" | "tunnel";

/** Fixed addresses inside the rig's namespaces (they never leave them). */
export const ADDR = {
  lanPrefix: "10.201.1.0/24",
  routerLan: "10.201.1.1",
  appClient: "10.201.1.10",
  tunnelClient: "10.201.1.20",
  wanPrefix: "10.201.2.0/24",
  routerWan: "10.201.2.1",
  tunnelServer: "10.201.2.2",
  backPrefix: "10.201.3.0/24",
  serverBack: "10.201.3.1",
  appServer: "10.201.3.2",
  /** Sources the rig's attacker spoofs; S routes them back to R, which drops them. */
  spoofPrefix: "10.201.128.0/17",
  /** The WAN attacker's own address (see `TopologyOptions.wanAttacker`). */
  attacker: "10.201.2.66",
  /**
   * Sources the WAN attacker uses when it must read the replies (complete handshakes): S
   * routes them to the attacker, whose injector reads them from its TUN device.
   */
  attackerPrefix: "10.201.64.0/18",
} as const;

/** Interface names inside the namespaces. */
export const IFACE = {
  lan: "lan0",
  bridge: "br0",
  wan: "wan0",
  back: "app0",
  /** The WAN switch (a bridge) in the attacker's namespace, and its ports towards R and S. */
  wanSwitch: "brwan",
  wanToRouter: "wanr",
  wanToServer: "wans",
  /** The attacker's TUN device, through which its injector writes and reads packets. */
  attackerTun: "atk0",
} as const;
