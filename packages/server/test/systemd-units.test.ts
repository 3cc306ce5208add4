/**
 * The systemd template units: `systemd-analyze verify` finds nothing to say about them, and
 * both programs run a tunnel as an unprivileged user with exactly the capabilities the units
 * grant (read from the unit files, applied with setpriv: no systemd runs as PID 1 here), from
 * a configuration file, and stop cleanly on SIGTERM.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { startUdpEcho, udpPing } from "../../../test-support/udp-scripts.js";
import { RunningProgram } from "../../common/test/program-harness.js";

const gate = realDeviceGate();
const root = join(import.meta.dirname, "../../..");
const units = {
  server: join(root, "packages/server/systemd/fake-tcp-server@.service"),
  client: join(root, "packages/client/systemd/fake-tcp-client@.service"),
};

/** `Key=value` settings of a unit's [Service] section (a repeated key: the values joined). */
function serviceSettings(path: string): Map<string, string> {
  const settings = new Map<string, string>();
  let inService = false;
  for (const raw of readFileSync(path, "utf8").split("\n")) {
    const line = raw.trim();
    if (line.startsWith("[")) inService = line === "[Service]";
    else if (inService && line && !line.startsWith("#")) {
      const eq = line.indexOf("=");
      const key = line.slice(0, eq);
      const have = settings.get(key);
      settings.set(key, have ? `${have} ${line.slice(eq + 1)}` : line.slice(eq + 1));
    }
  }
  return settings;
}

const analyze = spawnSync("systemd-analyze", ["--version"]);
const noAnalyze =
  analyze.error === undefined ? null : "systemd-analyze is not installed (apt-get install systemd)";

describe("systemd template units", () => {
  it.skipIf(noAnalyze !== null)(
    `pass systemd-analyze verify${noAnalyze ? ` (skipped: ${noAnalyze})` : ""}`,
    () => {
      const dir = mkdtempSync(join(tmpdir(), "ftc-units-"));
      try {
        // verify checks that ExecStart's command exists on systemd's fixed search path: stand-ins
        // on a private /usr/local/bin, in a mount namespace of its own (the host is untouched).
        const script = [
          "set -e",
          "mount -t tmpfs tmpfs /usr/local/bin",
          "printf '#!/bin/sh\\n' > /usr/local/bin/fake-tcp-server",
          "printf '#!/bin/sh\\n' > /usr/local/bin/fake-tcp-client",
          "chmod 755 /usr/local/bin/fake-tcp-server /usr/local/bin/fake-tcp-client",
          `cp ${units.server} ${units.client} ${dir}/`,
          `cd ${dir}`,
          "systemd-analyze verify --man=no ./fake-tcp-server@wg0.service ./fake-tcp-client@wg0.service",
        ].join("\n");
        const result = spawnSync(
          "unshare",
          ["-m", "--propagation", "private", "sh", "-c", script],
          {
            encoding: "utf8",
            timeout: 30_000,
          },
        );
        expect(result.stderr + result.stdout).toBe("");
        expect(result.status).toBe(0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it("ask for an unprivileged user, CAP_NET_ADMIN and CAP_BPF only, and sandboxing", () => {
    for (const path of Object.values(units)) {
      const s = serviceSettings(path);
      expect(s.get("User")).toBe("fake-tcp");
      expect(s.get("AmbientCapabilities")).toBe("CAP_NET_ADMIN CAP_BPF");
      expect(s.get("CapabilityBoundingSet")).toBe("CAP_NET_ADMIN CAP_BPF");
      expect(s.get("ExecStart")).toMatch(
        /^fake-tcp-(server|client) --config \/etc\/fake-tcp\/%i\.toml$/,
      );
      for (const [key, value] of [
        ["NoNewPrivileges", "yes"],
        ["ProtectSystem", "strict"],
        ["ProtectHome", "yes"],
        ["PrivateTmp", "yes"],
        ["KillSignal", "SIGTERM"],
        ["RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
        ["DeviceAllow", "/dev/net/tun rw"],
      ]) {
        expect(s.get(key), key).toBe(value);
      }
      // V8 needs writable+executable memory; /dev/net/tun must stay visible.
      expect(s.has("MemoryDenyWriteExecute")).toBe(false);
      expect(s.has("PrivateDevices")).toBe(false);
    }
  });
});

describe.skipIf(gate.skip)("the units' privileges are enough for a tunnel", () => {
  let nsC: Netns;
  let nsS: Netns;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ftc-unitrun-"));
    chmodSync(dir, 0o755);
    nsC = new Netns("ftuc");
    nsS = new Netns("ftus");
    linkNamespaces(nsC, "10.79.0.1/24", nsS, "10.79.0.2/24");
    await startUdpEcho(nsS, 7777);
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  /** setpriv: the unit's user stand-in (nobody) with exactly the unit's capabilities. */
  function asUnit(path: string): string[] {
    const caps = serviceSettings(path)
      .get("AmbientCapabilities")!
      .split(" ")
      .map((c) => `+${c.replace(/^CAP_/, "").toLowerCase()}`)
      .join(",");
    const set = `-all,${caps}`;
    // /dev/net/tun is 0666 on a stock system (the unit's DeviceAllow only opens the cgroup);
    // where this host has it 0600, a private /dev/net with a 0666 node stands in.
    const tunOpen = (statSync("/dev/net/tun").mode & 0o006) === 0o006;
    const privateTun = [
      "unshare",
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      'mount -t tmpfs tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200 && exec "$@"',
      "sh",
    ];
    return [
      ...(tunOpen ? [] : privateTun),
      "setpriv",
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      `--inh-caps=${set}`,
      `--ambient-caps=${set}`,
      `--bounding-set=${set}`,
      "--no-new-privs",
    ];
  }

  function configFile(name: string, lines: string[]): string {
    const path = join(dir, `${name}.toml`);
    writeFileSync(path, lines.join("\n"));
    chmodSync(path, 0o644);
    return path;
  }

  it("runs both programs as nobody with CAP_NET_ADMIN and CAP_BPF, two shards, clean stop", async () => {
    const serverConfig = configFile("server", [
      "listen = 4567",
      'remote = "127.0.0.1:7777"',
      'tun = "ftus0"',
      "ipv4-only = true",
      "queues = 2",
    ]);
    const clientConfig = configFile("client", [
      "local = 1234",
      'remote = "10.79.0.2:4567"',
      'tun = "ftuc0"',
      "ipv4-only = true",
      "queues = 1",
    ]);
    const server = new RunningProgram(nsS, "server", ["--config", serverConfig], {
      wrapper: asUnit(units.server),
    });
    const running = await server.waitFor("fake-tcp-server running", () => true, 20_000);
    // CAP_BPF is what lets the queue-steering program load: both shards run.
    expect(running.shards).toBe(2);
    const client = new RunningProgram(nsC, "client", ["--config", clientConfig], {
      wrapper: asUnit(units.client),
    });
    await client.waitFor("fake-tcp-client running", () => true, 20_000);
    // Not root: the programs really run as the unprivileged user.
    const uid = (pid: number) =>
      /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    expect(uid(server.child.pid!)).toBe("65534");
    expect(uid(client.child.pid!)).toBe("65534");

    expect(await udpPing(nsC, 1234, 10)).toBe(10);

    for (const [program, ns, tun] of [
      [client, nsC, "ftuc0"],
      [server, nsS, "ftus0"],
    ] as const) {
      const stopped = await program.stop();
      expect(stopped.code).toBe(0);
      expect(stopped.ms).toBeLessThan(2_000);
      expect(ns.exec("nft", ["list", "ruleset"])).not.toContain(`fake_tcp_${tun}`);
      expect(ns.exec("ip", ["-o", "link", "show"])).not.toContain(tun);
    }
  });
});
