#!/usr/bin/env node
// Before packing fake-tcp-server or fake-tcp-client: copies the WireGuard example of that
// program from docs/examples/ into the package's examples/ (docs/examples is the original).
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const role = process.argv[2];
const root = join(import.meta.dirname, "..");
const target = join(root, "packages", role, "examples");
mkdirSync(target, { recursive: true });
copyFileSync(
  join(root, "docs/examples", `wireguard-${role}.toml`),
  join(target, `wireguard-${role}.toml`),
);
