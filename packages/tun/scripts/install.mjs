#!/usr/bin/env node
// The install hook of fake-tcp-tun. In order: keep an addon already built here; use the
// addon shipped in prebuilds/ when it fits this machine (linux-x64 with glibc) and loads; else
// build from source with node-gyp (npm's own, or the devDependency in the repository); when
// that fails too, say in one line what to install, and fail.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(packageDir, "package.json"));
const built = join(packageDir, "build/Release/tun.node");
const header = process.report?.getReport()?.header;
const target = `${process.platform}-${process.arch}${header?.glibcVersionRuntime ? "-glibc" : ""}`;
const shipped = join(packageDir, "prebuilds", target, "tun.node");

function loads(path) {
  try {
    require(path);
    return true;
  } catch {
    return false;
  }
}

if (existsSync(built)) {
  console.log(`fake-tcp-tun: kept ${built}`);
  process.exit(0);
}
if (existsSync(shipped) && loads(shipped)) {
  console.log(`fake-tcp-tun: using the prebuilt addon for ${target}`);
  process.exit(0);
}
if (process.platform !== "linux") {
  console.error(`fake-tcp-tun: Linux only (TUN devices, nftables); this is ${process.platform}`);
  process.exit(1);
}

/** npm's own node-gyp (set for install scripts), else the one in the repository. */
function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) {
    return process.env.npm_config_node_gyp;
  }
  try {
    return join(dirname(require.resolve("node-gyp/package.json")), "bin/node-gyp.js");
  } catch {
    return undefined;
  }
}

const gyp = nodeGyp();
try {
  if (!gyp) throw new Error("node-gyp not found");
  console.log(`fake-tcp-tun: no prebuilt addon for ${target}; building it with node-gyp`);
  // Local Node headers when there are (no download: the repository builds offline), else
  // node-gyp fetches those of this Node version.
  const nodedir = ["/usr", dirname(dirname(process.execPath))].find((dir) =>
    existsSync(join(dir, "include/node/node_api.h")),
  );
  const args = [gyp, "rebuild", "--loglevel=warn", ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
  execFileSync(process.execPath, args, {
    cwd: packageDir,
    stdio: "inherit",
  });
} catch {
  console.error(
    `fake-tcp-tun: no prebuilt addon for ${target} and the build failed: install python3, make and a C compiler (Debian: apt-get install python3 make gcc), then npm rebuild fake-tcp-tun`,
  );
  process.exit(1);
}
