/** Where the rig finds its helper programs and the tunnel programs, from src/ or dist/. */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** packages/e2e (this module lives in its src/ or dist/). */
export const E2E_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** The repository root. */
export const REPO_ROOT = resolve(E2E_ROOT, "../..");

/** Built helper program `name` (e.g. "udp-probe"); spawned programs must be built JS. */
export function toolPath(name: string): string {
  const path = join(E2E_ROOT, "dist", "tools", `${name}.js`);
  if (!existsSync(path)) throw new Error(`${path} is missing: build first (npx tsc -b)`);
  return path;
}

/** The raw-packet sender (python3; Node has no raw sockets). */
export const RAW_SENDER = join(E2E_ROOT, "tools", "raw-sender.py");

/** ICMP echo sender (python3; `ping` is not installed on every machine). */
export const ICMP_PING = join(E2E_ROOT, "tools", "icmp-ping.py");

/** Built entry points of the tunnel programs. */
export const CLIENT_MAIN = join(REPO_ROOT, "packages", "client", "dist", "main.js");
export const SERVER_MAIN = join(REPO_ROOT, "packages", "server", "dist", "main.js");
