/**
 * Error paths: each failure is a JS Error with an errno-name `code` and a message saying
 * what to do. Option errors are caught before anything is opened (no root needed for them);
 * system errors are provoked for real in a namespace.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate, trackProcess } from "../../../test-support/netns.js";
import { TunDevice } from "../src/device.js";
import { TunQueue } from "../src/queue.js";
import { AGENT, Agent } from "./agent.js";

const gate = realDeviceGate();

function openError(opts: Parameters<typeof TunDevice.open>[0]) {
  try {
    TunDevice.open(opts);
  } catch (e) {
    return e as Error & { code: string };
  }
  throw new Error("TunDevice.open did not fail");
}

describe("option errors (caught before opening anything)", () => {
  it("rejects a name longer than 15 bytes", () => {
    const e = openError({ name: "a-very-long-tun-name" });
    expect(e.code).toBe("ENAMETOOLONG");
    expect(e.message).toMatch(/too long.*at most 15/);
  });
  it("rejects a bad MTU", () => {
    expect(openError({ mtu: 20 })).toMatchObject({ code: "EINVAL", message: /bad MTU 20/ });
    expect(openError({ mtu: 70_000 }).message).toMatch(/bad MTU 70000/);
    const v6 = openError({ mtu: 1000, ipv6: { local: "fd00::1", peer: "fd00::2" } });
    expect(v6.message).toMatch(/IPv6 needs at least 1280/);
  });
  it("rejects bad addresses", () => {
    const e = openError({ ipv4: { local: "10.0.0.300", peer: "10.0.0.2" } });
    expect(e).toMatchObject({ code: "EINVAL" });
    expect(e.message).toMatch(/bad IPv4 local address "10\.0\.0\.300"/);
    expect(openError({ ipv6: { local: "fd00::1", peer: "zz::2" } }).message).toMatch(
      /bad IPv6 peer address/,
    );
    expect(openError({ ipv4: { local: "10.0.0.1", peer: "10.0.0.1" } }).message).toMatch(
      /local and peer are both/,
    );
  });
  it("rejects a bad batch size and queue count", () => {
    expect(openError({ batchSize: 0 }).code).toBe("ERANGE");
    expect(openError({ queues: 0 }).code).toBe("ERANGE");
  });
});

/** Runs the agent's "try" mode in `ns`, optionally behind a wrapper command. */
function tryOpen(
  ns: Netns,
  opts: Record<string, unknown>,
  wrapper: string[] = [],
): Promise<{ ok: boolean; code?: string; message?: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = trackProcess(
      spawn(
        "ip",
        [
          "netns",
          "exec",
          ns.name,
          ...wrapper,
          process.execPath,
          AGENT,
          "try",
          JSON.stringify(opts),
        ],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      ),
    );
    let out = "";
    let err = "";
    child.stdout?.on("data", (d) => {
      out += d;
    });
    child.stderr?.on("data", (d) => {
      err += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(timer);
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (!line) reject(new Error(`no result from the child; stderr: ${err}`));
      else resolve({ ...JSON.parse(line), stderr: err });
    });
  });
}

describe.skipIf(gate.skip)("system errors (real devices in a namespace)", () => {
  let ns: Netns;
  let agent: Agent;

  beforeAll(async () => {
    ns = new Netns("ftterr");
    ({ agent } = await Agent.start(ns, { name: "fterr0" }));
  });
  afterAll(async () => {
    await agent?.close().catch(() => {});
    cleanupAll();
  });

  it("a missing clone device is ENOENT with a modprobe hint", async () => {
    const r = await tryOpen(ns, { devicePath: "/nonexistent/net/tun" });
    expect(r).toMatchObject({ ok: false, code: "ENOENT" });
    expect(r.message).toMatch(/modprobe tun/);
    expect(r.message).toMatch(/--device \/dev\/net\/tun/);
  });

  it("a name held by another process's device is EBUSY", async () => {
    const r = await tryOpen(ns, { name: "fterr0" });
    expect(r).toMatchObject({ ok: false, code: "EBUSY" });
    expect(r.message).toMatch(/choose another --tun name or stop the other process/);
  });

  it("a multi-queue open never joins another process's multi-queue device (EBUSY)", async () => {
    const { agent: other } = await Agent.start(ns, { name: "fterrmq0", queues: 2 });
    try {
      const r = await tryOpen(ns, { name: "fterrmq0", queues: 2 });
      expect(r).toMatchObject({ ok: false, code: "EBUSY" });
    } finally {
      await other.close().catch(() => {});
    }
  });

  it("an existing non-TUN name is EINVAL", async () => {
    const r = await tryOpen(ns, { name: "lo" });
    expect(r).toMatchObject({ ok: false, code: "EINVAL" });
    expect(r.message).toMatch(/not a TUN device/);
  });

  it("attaching to a missing or single-queue device explains why", async () => {
    expect(() => TunQueue.attach("ftnosuchdev")).toThrow(
      expect.objectContaining({ code: "ENODEV", message: expect.stringMatching(/no such TUN/) }),
    );
    // fterr0 lives in the namespace, not here: attach checks this namespace's devices.
    expect(() => TunQueue.attach("fterr0")).toThrow(expect.objectContaining({ code: "ENODEV" }));
    // In its namespace (the agent's own single-queue device) it exists but cannot take a
    // second queue.
    const single = await agent.request("attachInfo", {});
    expect(single).toMatchObject({ threw: true, code: "EINVAL" });
    expect(single.message).toMatch(/not opened as multi-queue/);
  });

  it("without CAP_NET_ADMIN it is EPERM with a how-to", async () => {
    const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find(existsSync);
    expect(setpriv, "setpriv (util-linux) is needed to drop privileges").toBeDefined();
    // Still uid 0 (the device file opens whatever its mode), but with no capabilities at all.
    const r = await tryOpen(ns, {}, [setpriv!, "--bounding-set=-all", "--inh-caps=-all"]);
    expect(r).toMatchObject({ ok: false, code: "EPERM" });
    expect(r.message).toMatch(/CAP_NET_ADMIN: run as root or grant CAP_NET_ADMIN/);
  });

  it("an unprivileged user gets a how-to that fits the device file's mode", async () => {
    const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find(existsSync);
    expect(setpriv, "setpriv (util-linux) is needed to drop privileges").toBeDefined();
    const r = await tryOpen(ns, {}, [
      setpriv!,
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "--inh-caps=-all",
    ]);
    // A world-accessible /dev/net/tun (0666) opens, then TUNSETIFF needs CAP_NET_ADMIN; a
    // 0600 one is refused by open(2) already.
    const worldOpen = (statSync("/dev/net/tun").mode & 0o006) === 0o006;
    if (worldOpen) {
      expect(r).toMatchObject({ ok: false, code: "EPERM" });
      expect(r.message).toMatch(/CAP_NET_ADMIN: run as root or grant CAP_NET_ADMIN/);
    } else {
      expect(r).toMatchObject({ ok: false, code: "EACCES" });
      expect(r.message).toMatch(/\/dev\/net\/tun is not open to this user .* run as root/);
    }
  });

  it("a missing `ip` command says to install iproute2 and leaves no device behind", async () => {
    const r = await tryOpen(
      ns,
      { name: "fterrip", ipv4: { local: "10.205.0.1", peer: "10.205.0.2" } },
      ["env", "PATH=/nonexistent"],
    );
    expect(r).toMatchObject({ ok: false, code: "ENOENT" });
    expect(r.message).toMatch(/install iproute2/);
    expect(() => ns.exec("ip", ["link", "show", "fterrip"])).toThrow();
  });

  it("an address the kernel refuses is reported with the ip error, no device left", async () => {
    // A loopback address parses as IPv6 but the kernel refuses it on a TUN.
    const r = await tryOpen(ns, { name: "fterrad", ipv6: { local: "::1", peer: "fd00:205::2" } });
    expect(r).toMatchObject({ ok: false, code: "EINVAL" });
    expect(r.message).toMatch(/bad IPv6 address configuration ::1 peer fd00:205::2/);
    expect(r.message).toMatch(/loopback/);
    expect(() => ns.exec("ip", ["link", "show", "fterrad"])).toThrow();
  });

  it("the `ip` binary is really what the namespace uses", () => {
    expect(execFileSync("ip", ["-V"], { encoding: "utf8" })).toMatch(/iproute2/);
  });
});
