/**
 * Installing by name from a registry: the five publishable packages are packed (`pnpm pack`:
 * workspace ranges resolved), published to a local Verdaccio started here, and installed
 * with `npm install -g fake-tcp-server fake-tcp-client` into a fresh prefix with a PATH that
 * holds node, npm and sh only (no cc, make, g++, python3): the prebuilt addon must do. The
 * installed commands then print their version and carry a tunnel between two namespaces.
 * Also: the install hook's one-line how-to when neither a prebuilt addon nor a build works.
 * The same install in a clean container (a Debian root with only Node, booted by systemd) is
 * in systemd-service.test.ts. The registry: ./local-registry.ts.
 */
import { execFile, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { startUdpEcho, udpPing } from "../../../test-support/udp-scripts.js";
import { RunningProgram } from "../../common/test/program-harness.js";
import { type LocalRegistry, startLocalRegistry } from "./local-registry.js";

const gate = realDeviceGate();
const execFileAsync = promisify(execFile);
const root = join(import.meta.dirname, "../../..");

describe.skipIf(gate.skip)("npm install -g from a registry, without a compiler", () => {
  let dir: string;
  let registry: LocalRegistry | undefined;
  let prefix: string;
  /** node, npm and sh only. */
  let bareBin: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ftc-npm-"));
    registry = await startLocalRegistry(dir);
    const npmrc = registry.npmrc;

    bareBin = join(dir, "bare-bin");
    mkdirSync(bareBin);
    for (const tool of ["node", "sh"]) {
      const which = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" });
      symlinkSync(which.stdout.trim(), join(bareBin, tool));
    }
    // npm itself (its bin resolved to npm-cli.js, which finds its own files from there).
    const npmCli = spawnSync("sh", ["-c", 'readlink -f "$(command -v npm)"'], { encoding: "utf8" });
    symlinkSync(npmCli.stdout.trim(), join(bareBin, "npm"));

    prefix = join(dir, "prefix");
    const install = await execFileAsync(
      "npm",
      [
        "install",
        "-g",
        "--prefix",
        prefix,
        "--foreground-scripts",
        "--no-audit",
        "--no-fund",
        "--userconfig",
        npmrc,
        "--cache",
        join(dir, "npm-cache"),
        "fake-tcp-server",
        "fake-tcp-client",
      ],
      { env: { PATH: bareBin, HOME: dir }, timeout: 300_000 },
    );
    console.log(
      install.stdout
        .split("\n")
        .filter((l) => l.includes("fake-tcp"))
        .join("\n"),
    );
  }, 900_000);

  afterAll(() => {
    cleanupAll();
    registry?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("gives working commands without a compiler, from the prebuilt addon", async () => {
    for (const tool of ["cc", "gcc", "g++", "make", "python3"]) {
      expect(
        spawnSync("sh", ["-c", `command -v ${tool}`], { env: { PATH: bareBin } }).status,
      ).not.toBe(0);
    }
    for (const program of ["fake-tcp-server", "fake-tcp-client"]) {
      const { stdout } = await execFileAsync(join(prefix, "bin", program), ["--version"], {
        env: { PATH: bareBin },
      });
      expect(stdout.trim()).toBe("0.1.0");
    }
    // Nothing was compiled: the addon in use is the shipped one.
    const find = spawnSync("find", [join(prefix, "lib/node_modules"), "-name", "tun.node"], {
      encoding: "utf8",
    });
    const addons = find.stdout.trim().split("\n");
    expect(addons.length).toBeGreaterThan(0);
    for (const addon of addons) expect(addon).toMatch(/\/prebuilds\/linux-x64-glibc\/tun\.node$/);

    const nsC = new Netns("ftnc");
    const nsS = new Netns("ftns");
    linkNamespaces(nsC, "10.80.0.1/24", nsS, "10.80.0.2/24");
    await startUdpEcho(nsS, 7777);
    const server = new RunningProgram(
      nsS,
      "server",
      ["--listen", "4567", "--remote", "127.0.0.1:7777", "-4"],
      { bin: join(prefix, "bin/fake-tcp-server") },
    );
    await server.waitFor("fake-tcp-server running", () => true, 20_000);
    const client = new RunningProgram(
      nsC,
      "client",
      ["--local", "1234", "--remote", "10.80.0.2:4567", "-4"],
      { bin: join(prefix, "bin/fake-tcp-client") },
    );
    await client.waitFor("fake-tcp-client running", () => true, 20_000);
    expect(await udpPing(nsC, 1234, 10)).toBe(10);
    expect((await client.stop()).code).toBe(0);
    expect((await server.stop()).code).toBe(0);
  });

  it("fails the install with a one-line how-to when there is no prebuilt addon and no compiler", () => {
    const copy = join(dir, "tun-copy");
    cpSync(join(root, "packages/tun"), copy, {
      recursive: true,
      filter: (src) => !/\/(build|prebuilds|node_modules)$/.test(src),
    });
    const result = spawnSync(process.execPath, [join(copy, "scripts/install.mjs")], {
      cwd: copy,
      encoding: "utf8",
      env: { PATH: bareBin },
      timeout: 60_000,
    });
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /no prebuilt addon for linux-x64-glibc and the build failed: install python3, make and a C compiler .*then npm rebuild fake-tcp-tun/,
    );
  });
});
