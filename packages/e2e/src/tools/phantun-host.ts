/**
 * The host side of the phantun-shaped program: its TUN device, IPv4 forwarding and the NAT
 * rules phantun's documentation prescribes (the client masquerades its TUN peer address on
 * the way out; the server DNATs its public TCP port to its TUN peer address). Nothing more:
 * unlike our programs it adds no rule dropping segments conntrack finds invalid, as a phantun
 * deployment following that documentation would not have one.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { TunDevice } from "fake-tcp-tun";

export interface PhantunHostOptions {
  role: "client" | "server";
  tun: string;
  /** The OS side of the TUN and the stack's own address (phantun's --tun-local/--tun-peer). */
  tunLocal: string;
  tunPeer: string;
  /** The server's public TCP port (DNAT-ed); unused by the client. */
  port?: number;
}

/** A configured host: the device, and `close()` that removes the rules and the device. */
export interface PhantunHost {
  readonly device: TunDevice;
  readonly table: string;
  close(): void;
}

/** The nft table of the program for `tun`. */
export function phantunTableName(tun: string): string {
  return `phantun_${tun.replace(/[^A-Za-z0-9_]/g, "_")}`;
}

/** The ruleset, as one `nft -f` transaction that replaces a stale table of the same name. */
export function phantunRuleset(o: PhantunHostOptions): string {
  const table = phantunTableName(o.tun);
  const chain =
    o.role === "client"
      ? `  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname != "${o.tun}" ip saddr ${o.tunPeer} masquerade
  }`
      : `  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname != "${o.tun}" tcp dport ${o.port} dnat to ${o.tunPeer}
  }`;
  return `table ip ${table}\ndelete table ip ${table}\ntable ip ${table} {\n${chain}\n}\n`;
}

/** Opens the TUN device, enables IPv4 forwarding and installs the rules. Throws on failure. */
export function setUpPhantunHost(o: PhantunHostOptions): PhantunHost {
  writeFileSync("/proc/sys/net/ipv4/ip_forward", "1\n");
  const device = TunDevice.open({ name: o.tun, ipv4: { local: o.tunLocal, peer: o.tunPeer } });
  const table = phantunTableName(o.tun);
  try {
    execFileSync("nft", ["-f", "-"], {
      input: phantunRuleset(o),
      stdio: ["pipe", "ignore", "pipe"],
    });
  } catch (err) {
    device.close();
    throw err;
  }
  let closed = false;
  return {
    device,
    table,
    close() {
      if (closed) return;
      closed = true;
      try {
        execFileSync("nft", ["delete", "table", "ip", table], { stdio: "ignore" });
      } catch {
        // Already gone (the namespace may be on its way out).
      }
      device.close();
    },
  };
}
