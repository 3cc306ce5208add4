/**
 * IP forwarding, which both programs need: the client's stack traffic is forwarded from the
 * TUN to the egress interface (and masqueraded), the server's DNAT-ed traffic is forwarded
 * into the TUN.
 *
 * Forwarding is left enabled on exit on purpose: another instance (or anything else on the
 * host) may depend on it, and turning it off under them would cut their traffic.
 */
import { readFile, writeFile } from "node:fs/promises";
import { errnoCode, UsageError } from "./errors.js";

/** A forwarding switch under /proc/sys and its sysctl name. */
export interface ForwardingSetting {
  readonly path: string;
  readonly sysctl: string;
}

export const IPV4_FORWARDING: ForwardingSetting = {
  path: "/proc/sys/net/ipv4/ip_forward",
  sysctl: "net.ipv4.ip_forward",
};
export const IPV6_FORWARDING: ForwardingSetting = {
  path: "/proc/sys/net/ipv6/conf/all/forwarding",
  sysctl: "net.ipv6.conf.all.forwarding",
};

/**
 * Sets `setting` to 1. Resolves to true when it was changed, false when it was already on.
 * Throws a `UsageError` naming the sysctl when it cannot be read or written.
 */
export async function enableForwarding(setting: ForwardingSetting): Promise<boolean> {
  try {
    const current = (await readFile(setting.path, "utf8")).trim();
    if (current === "1") return false;
    await writeFile(setting.path, "1\n");
    return true;
  } catch (err) {
    const code = errnoCode(err) ?? "error";
    const why =
      code === "ENOENT"
        ? `${setting.path} does not exist (is ${setting.sysctl.includes("ipv6") ? "IPv6" : "IPv4"} disabled?)`
        : `cannot write ${setting.path} (${code})`;
    throw new UsageError(
      `${why}: run as root or with CAP_NET_ADMIN, or set ${setting.sysctl}=1 yourself and use --no-auto-rules`,
    );
  }
}
