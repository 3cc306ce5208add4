/**
 * Point-to-point address configuration through iproute2's `ip`, run with execFile (no shell,
 * so addresses and names are never interpreted).
 */
import { execFileSync } from "node:child_process";
import { type TunError, tunError } from "./errors.js";
import type { PointToPoint } from "./options.js";

/** Maps the usual RTNETLINK complaints to errno names. */
function codeFromIpStderr(stderr: string): string {
  if (/File exists/i.test(stderr)) return "EEXIST";
  if (/Operation not permitted/i.test(stderr)) return "EPERM";
  if (/Permission denied/i.test(stderr)) return "EACCES";
  if (/Cannot find device|No such device/i.test(stderr)) return "ENODEV";
  if (/Invalid argument|invalid|Error: /i.test(stderr)) return "EINVAL";
  return "EIPROUTE";
}

/** Runs `ip ARGS`; throws a TunError explaining the failure. */
export function runIp(args: string[]): void {
  try {
    execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT")
      throw tunError(
        "ENOENT",
        "the `ip` command was not found: install iproute2 (e.g. `apt-get install iproute2`) to configure TUN addresses",
        error,
      );
    const stderr = (e.stderr ?? "").trim();
    const code = codeFromIpStderr(stderr);
    const hint =
      code === "EPERM" || code === "EACCES" ? " (run as root or grant CAP_NET_ADMIN)" : "";
    throw tunError(code, `\`ip ${args.join(" ")}\` failed: ${stderr || e.message}${hint}`, error);
  }
}

/** Adds a point-to-point address pair to `dev` (IPv6 without duplicate address detection). */
export function addPointToPoint(dev: string, family: 4 | 6, pair: PointToPoint): void {
  try {
    if (family === 4) runIp(["-4", "addr", "add", pair.local, "peer", pair.peer, "dev", dev]);
    else runIp(["-6", "addr", "add", pair.local, "peer", pair.peer, "dev", dev, "nodad"]);
  } catch (error) {
    const e = error as TunError;
    throw tunError(
      e.code,
      `bad IPv${family} address configuration ${pair.local} peer ${pair.peer} on ${dev}: ${e.message}`,
      error,
    );
  }
}
