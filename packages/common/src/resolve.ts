/**
 * Host name resolution for `--remote`, with errors phrased for the user.
 */
import { lookup } from "node:dns/promises";
import type { HostPort, SocketAddress } from "./address.js";
import { errnoCode, UsageError } from "./errors.js";

/**
 * Resolves `target` to every address (A and AAAA, in the resolver's order) with
 * `dns.lookup({ all: true })`, which follows /etc/hosts and nsswitch like other programs.
 * `ipv4Only` keeps A records only. Throws a `UsageError` when nothing usable comes back.
 */
export async function resolveHostPort(
  target: HostPort,
  ipv4Only: boolean,
  what = "--remote",
): Promise<SocketAddress[]> {
  if (target.family !== 0) {
    if (ipv4Only && target.family === 6) {
      throw new UsageError(`${what}: ${target.host} is an IPv6 address but -4/--ipv4-only is set`);
    }
    return [{ address: target.host, port: target.port, family: target.family }];
  }
  let found: { address: string; family: number }[];
  try {
    found = await lookup(target.host, { all: true, family: ipv4Only ? 4 : 0 });
  } catch (err) {
    const code = errnoCode(err) ?? "error";
    throw new UsageError(
      `${what}: cannot resolve host "${target.host}" (${code}); check the name or give an IP address`,
    );
  }
  const addresses = found
    .filter((a) => a.family === 4 || (!ipv4Only && a.family === 6))
    .map((a) => ({ address: a.address, port: target.port, family: a.family as 4 | 6 }));
  if (addresses.length === 0) {
    throw new UsageError(
      `${what}: host "${target.host}" has no ${ipv4Only ? "IPv4 " : ""}address; check the name or give an IP address`,
    );
  }
  return addresses;
}
