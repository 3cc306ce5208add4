#!/usr/bin/env node
// Builds the N-API addon from source with node-gyp, offline: the headers come from the local
// Node installation (never downloaded). Node-API is ABI-stable, so this one build loads on
// every Node >= 20 (checked on 20 and 24).
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The prefix whose include/node holds node_api.h: /usr (Debian's nodejs-dev) or Node's own. */
function localNodeDir() {
  if (existsSync("/usr/include/node/node_api.h")) return "/usr";
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, "include/node/node_api.h"))) return prefix;
  throw new Error(
    `no local Node headers: neither /usr/include/node/node_api.h nor ${prefix}/include/node/node_api.h exists (install the nodejs headers, e.g. apt-get install libnode-dev)`,
  );
}

// `--if-missing` (the install hook): keep an addon that is already built. A production
// reinstall (no devDependencies, so no node-gyp) must not try to rebuild it.
const addonPath = join(packageDir, "build/Release/tun.node");
if (process.argv.includes("--if-missing") && existsSync(addonPath)) {
  console.log(`kept ${addonPath} (already built; \`pnpm run build:native\` rebuilds it)`);
  process.exit(0);
}

const require = createRequire(join(packageDir, "package.json"));
const nodeGyp = join(dirname(require.resolve("node-gyp/package.json")), "bin/node-gyp.js");
const nodedir = localNodeDir();
execFileSync(process.execPath, [nodeGyp, "rebuild", `--nodedir=${nodedir}`, "--loglevel=warn"], {
  cwd: packageDir,
  stdio: "inherit",
  // No network: any attempt to fetch headers must fail instead of silently downloading.
  env: { ...process.env, npm_config_nodedir: nodedir, npm_config_offline: "true" },
});
console.log(`built ${join(packageDir, "build/Release/tun.node")} against ${nodedir}/include/node`);
