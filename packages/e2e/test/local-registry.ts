/**
 * A local npm registry for the install tests: Verdaccio (6.8.0, node-fetch pinned to 2.7.0 to
 * install on Node 20), installed from the npm registry into .cache/verdaccio on first use,
 * started on a random loopback port, with the five publishable packages packed (`pnpm pack`:
 * workspace ranges resolved) and published to it. Our package names are served from the
 * local storage only (never proxied), everything else through the npm registry.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);
const root = join(import.meta.dirname, "../../..");
const PACKAGES = ["fake-tcp", "common", "tun", "client", "server"];
const verdaccioDir = join(root, ".cache/verdaccio");

/** Installs Verdaccio once (bounded); returns why it could not, or null. */
function ensureVerdaccio(): string | null {
  if (existsSync(join(verdaccioDir, "node_modules/.bin/verdaccio"))) return null;
  mkdirSync(verdaccioDir, { recursive: true });
  writeFileSync(
    join(verdaccioDir, "package.json"),
    JSON.stringify({
      name: "verdaccio-runner",
      private: true,
      dependencies: { verdaccio: "6.8.0" },
      overrides: { "node-fetch": "2.7.0" },
    }),
  );
  const result = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], {
    cwd: verdaccioDir,
    encoding: "utf8",
    timeout: 300_000,
  });
  return result.status === 0 ? null : `npm install verdaccio failed: ${result.stderr.slice(-300)}`;
}

export interface LocalRegistry {
  /** e.g. http://127.0.0.1:23456/ */
  url: string;
  /** An npmrc with the registry and a publishing token. */
  npmrc: string;
  process: ChildProcess;
  stop(): void;
}

/**
 * Starts Verdaccio with its storage under `dir` and publishes the packages to it. The caller
 * calls `stop()` (also when this throws half-way: the process is then already stopped).
 */
export async function startLocalRegistry(dir: string): Promise<LocalRegistry> {
  const failure = ensureVerdaccio();
  if (failure) throw new Error(failure);

  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const url = `http://127.0.0.1:${port}/`;
  writeFileSync(
    join(dir, "verdaccio.yaml"),
    [
      `storage: ${join(dir, "storage")}`,
      "auth:",
      "  htpasswd:",
      `    file: ${join(dir, "htpasswd")}`,
      "uplinks:",
      "  npmjs:",
      "    url: https://registry.npmjs.org/",
      "packages:",
      "  'fake-tcp*':",
      "    access: $all",
      "    publish: $authenticated",
      "  '**':",
      "    access: $all",
      "    proxy: npmjs",
      "log: { type: stdout, format: pretty, level: warn }",
      `listen: 127.0.0.1:${port}`,
    ].join("\n"),
  );
  const registry = spawn(
    process.execPath,
    [join(verdaccioDir, "node_modules/verdaccio/bin/verdaccio"), "-c", join(dir, "verdaccio.yaml")],
    { stdio: "ignore" },
  );
  const stop = () => {
    registry.kill("SIGTERM");
  };
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        if ((await fetch(`${url}-/ping`)).ok) break;
      } catch {}
      if (Date.now() > deadline) throw new Error("verdaccio did not answer within 60 s");
      await new Promise((r) => setTimeout(r, 300));
    }
    // A user for publishing (Verdaccio registers it on first login).
    const login = await fetch(`${url}-/user/org.couchdb.user:ci`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "ci", password: "ci-password-1" }),
    });
    const { token } = (await login.json()) as { token: string };
    const npmrc = join(dir, "npmrc");
    writeFileSync(npmrc, `registry=${url}\n//127.0.0.1:${port}/:_authToken=${token}\n`);

    const packed = join(dir, "packed");
    await Promise.all(
      PACKAGES.map((name) =>
        execFileAsync("pnpm", ["pack", "--pack-destination", packed], {
          cwd: join(root, "packages", name),
          timeout: 120_000,
        }),
      ),
    );
    for (const tarball of readdirSync(packed)) {
      await execFileAsync("npm", ["publish", join(packed, tarball), "--userconfig", npmrc], {
        timeout: 120_000,
      });
    }
    return { url, npmrc, process: registry, stop };
  } catch (error) {
    stop();
    throw error;
  }
}
