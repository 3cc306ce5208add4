/**
 * IP forwarding, which both programs need: the client's stack traffic is forwarded from the
 * TUN to the egress interface (and masqueraded), the server's rewritten traffic is forwarded
 * into the TUN.
 *
 * Only what is off is changed, and what was changed is put back when the last instance of the
 * programs on this network namespace exits (see `host-setup.ts`). Turning IPv6 forwarding on
 * makes Linux ignore router advertisements on interfaces with `accept_ra=1`, so a host
 * configured by SLAAC would lose its IPv6 default route: those interfaces get `accept_ra=2`
 * (accept them even when forwarding) first, and `1` back at the end.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { errnoCode, UsageError } from "./errors.js";

/** A forwarding switch under /proc/sys and its sysctl name. */
export interface ForwardingSetting {
  /** Short name kept in the restore record ("ipv4", "ipv6"). */
  readonly key: string;
  readonly path: string;
  readonly sysctl: string;
}

export const IPV4_FORWARDING: ForwardingSetting = {
  key: "ipv4",
  path: "/proc/sys/net/ipv4/ip_forward",
  sysctl: "net.ipv4.ip_forward",
};
export const IPV6_FORWARDING: ForwardingSetting = {
  key: "ipv6",
  path: "/proc/sys/net/ipv6/conf/all/forwarding",
  sysctl: "net.ipv6.conf.all.forwarding",
};

/** The settings by their restore-record key. */
export const FORWARDING_SETTINGS: Record<string, ForwardingSetting> = {
  ipv4: IPV4_FORWARDING,
  ipv6: IPV6_FORWARDING,
};

const IPV6_CONF = "/proc/sys/net/ipv6/conf";

/** Reads a /proc/sys value (trimmed), or undefined when it does not exist. */
export async function readSysctl(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

function sysctlError(setting: ForwardingSetting, err: unknown): UsageError {
  const code = errnoCode(err) ?? "error";
  const why =
    code === "ENOENT"
      ? `${setting.path} does not exist (is ${setting.key === "ipv6" ? "IPv6" : "IPv4"} disabled?)`
      : `cannot write ${setting.path} (${code})`;
  return new UsageError(
    `${why}: run as root or with CAP_NET_ADMIN, or set ${setting.sysctl}=1 yourself and use --no-auto-rules`,
  );
}

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
    throw sysctlError(setting, err);
  }
}

/** Sets `setting` back to 0 if it is still 1. Resolves to whether it was changed. */
export async function disableForwarding(setting: ForwardingSetting): Promise<boolean> {
  if ((await readSysctl(setting.path)) !== "1") return false;
  await writeFile(setting.path, "0\n");
  return true;
}

/**
 * Gives every IPv6 interface that accepts router advertisements only while not forwarding
 * (`accept_ra=1`, including `default`, the value of interfaces made later) `accept_ra=2`.
 * Resolves to the names changed.
 */
export async function keepAcceptingRouterAdvertisements(): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(IPV6_CONF);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return []; // no IPv6
    throw err;
  }
  const changed: string[] = [];
  for (const name of names) {
    if (name === "all") continue; // not consulted for accept_ra
    const path = `${IPV6_CONF}/${name}/accept_ra`;
    if ((await readSysctl(path)) !== "1") continue;
    try {
      await writeFile(path, "2\n");
      changed.push(name);
    } catch (err) {
      throw new UsageError(
        `cannot write ${path} (${errnoCode(err) ?? "error"}): needed to keep router advertisements while IPv6 forwarding is on; run as root or with CAP_NET_ADMIN, or use -4 or --no-auto-rules`,
      );
    }
  }
  return changed;
}

/** Puts `accept_ra=1` back on `names` where it is still 2 (and the interface still exists). */
export async function restoreAcceptRouterAdvertisements(
  names: readonly string[],
): Promise<string[]> {
  const restored: string[] = [];
  for (const name of names) {
    const path = `${IPV6_CONF}/${name}/accept_ra`;
    if ((await readSysctl(path)) !== "2") continue;
    await writeFile(path, "1\n");
    restored.push(name);
  }
  return restored;
}
