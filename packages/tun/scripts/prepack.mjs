#!/usr/bin/env node
// Before packing: ships the addon built here as prebuilds/<platform>-<arch>[-glibc]/tun.node,
// so that installing the package needs no compiler on a machine of that kind.
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const built = join(packageDir, "build/Release/tun.node");
if (!existsSync(built)) {
  console.error(`fake-tcp-tun: ${built} is missing: run pnpm run build before packing`);
  process.exit(1);
}
const header = process.report?.getReport()?.header;
const target = `${process.platform}-${process.arch}${header?.glibcVersionRuntime ? "-glibc" : ""}`;
mkdirSync(join(packageDir, "prebuilds", target), { recursive: true });
copyFileSync(built, join(packageDir, "prebuilds", target, "tun.node"));
console.log(`fake-tcp-tun: packed the addon as prebuilds/${target}/tun.node`);
