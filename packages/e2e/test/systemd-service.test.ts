/**
 * The programs as a user installs and runs them, under a real systemd:
 *
 * 1. A clean container with only Node (Debian minbase, Node.js 24 and npm, systemd, nftables,
 *    iproute2; no compiler: docker/make-systemd-rootfs.sh) installs `fake-tcp-server` and
 *    `fake-tcp-client` by name from a local Verdaccio (./local-registry.ts).
 * 2. Two containers booted from it with systemd as PID 1 (systemd-nspawn --boot), each in a
 *    network namespace of this test linked to the other's, install the shipped template units
 *    and sysusers file and a configuration `/etc/fake-tcp/wg0.toml` the way the README says,
 *    then `systemctl enable --now fake-tcp-server@wg0` / `fake-tcp-client@wg0`: the programs
 *    run as the user fake-tcp with exactly CAP_NET_ADMIN and CAP_BPF, carry UDP both ways
 *    (echoes), and after `systemctl stop` no TUN device, nftables table or process of theirs
 *    is left.
 *
 * The root file system is built once (debootstrap, then apt; cached under /var/cache/fake-tcp)
 * and never written: the install and each container run on overlays of it under a temporary directory.
 * Containers, overlays, namespaces and the registry are removed in afterAll, also on failure.
 *
 * Why nspawn and not the Docker rig's engine: Debian's docker.io (20.10) does not know CAP_BPF,
 * which the units grant, and `--privileged` cannot start where the host's bounding set lacks a
 * capability (here CAP_SYS_RESOURCE); nspawn keeps exactly the capabilities it is given and
 * needs no engine.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cleanupAll,
  linkNamespaces,
  Netns,
  realDeviceGate,
  run,
} from "../../../test-support/netns.js";
import { schedSlices } from "../../../test-support/sched.js";
import { udpEchoScript, udpPingScript } from "../../../test-support/udp-scripts.js";
import { type LocalRegistry, startLocalRegistry } from "./local-registry.js";

const gate = realDeviceGate();
const root = join(import.meta.dirname, "../../..");
const CONTAINER_ENV = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/root",
  LANG: "C",
};
/** CAP_NET_ADMIN (12) and CAP_BPF (39): the units' AmbientCapabilities, as a mask. */
const UNIT_CAPS = (1n << 12n) | (1n << 39n);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** systemd-nspawn, from Debian's systemd-container when missing; why not, or null. */
function ensureNspawn(): string | null {
  if (spawnSync("systemd-nspawn", ["--version"]).status === 0) return null;
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  spawnSync("apt-get", ["update", "-qq"], { env, timeout: 300_000 });
  const install = spawnSync(
    "apt-get",
    ["install", "-y", "-qq", "--no-install-recommends", "systemd-container"],
    { env, encoding: "utf8", timeout: 600_000 },
  );
  return install.status === 0
    ? null
    : `systemd-nspawn is missing and apt-get install systemd-container failed: ${install.stderr.slice(-300)}`;
}

/** An overlay of `lower` (colon-separated, highest first) at DIR/merged. */
function mountOverlay(dir: string, lower: string): string {
  for (const d of ["upper", "work", "merged"]) mkdirSync(join(dir, d), { recursive: true });
  const merged = join(dir, "merged");
  run("mount", [
    "-t",
    "overlay",
    "overlay",
    "-o",
    `lowerdir=${lower},upperdir=${join(dir, "upper")},workdir=${join(dir, "work")}`,
    merged,
  ]);
  return merged;
}

function unmount(path: string): void {
  if (spawnSync("mountpoint", ["-q", path]).status !== 0) return;
  if (spawnSync("umount", [path]).status !== 0) spawnSync("umount", ["-l", path]);
}

/** A container booted by systemd-nspawn with systemd as PID 1, in a namespace of the test. */
class BootedContainer {
  readonly nspawn: ChildProcess;
  private leader = 0;
  private exited = false;

  constructor(
    readonly name: string,
    readonly rootDir: string,
    readonly ns: Netns,
    readonly consoleLog: string,
  ) {
    const out = openSync(consoleLog, "a");
    this.nspawn = spawn(
      "systemd-nspawn",
      [
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--boot",
        `--machine=${name}`,
        `--directory=${rootDir}`,
        `--network-namespace-path=/run/netns/${ns.name}`,
        // The units ask for CAP_BPF; nspawn keeps CAP_NET_ADMIN with a network of its own.
        "--capability=CAP_NET_ADMIN,CAP_BPF",
        // nspawn's own seccomp filter lets bpf() through only with CAP_SYS_ADMIN; a host
        // booted on its own has no such filter, only the units' SystemCallFilter.
        "--system-call-filter=bpf",
        "--console=pipe",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
      ],
      { stdio: ["ignore", out, out] },
    );
    closeSync(out);
    this.nspawn.once("exit", () => {
      this.exited = true;
    });
  }

  /** Waits for the container's systemd to finish booting (bounded). */
  async booted(timeoutMs = 120_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let state = "";
    while (Date.now() < deadline) {
      if (this.exited)
        throw new Error(`${this.name}: systemd-nspawn exited; see ${this.consoleLog}`);
      if (!this.leader) this.leader = this.findLeader();
      if (this.leader) {
        const r = spawnSync(
          "nsenter",
          ["-t", String(this.leader), "-a", "systemctl", "is-system-running"],
          { encoding: "utf8", env: CONTAINER_ENV, timeout: 10_000 },
        );
        state = r.stdout.trim();
        if (state === "running" || state === "degraded") return state;
      }
      await sleep(500);
    }
    throw new Error(`${this.name}: not booted within ${timeoutMs / 1000} s (state ${state})`);
  }

  /** The container's PID 1 as the host sees it: the process of its namespace whose NSpid ends in 1. */
  private findLeader(): number {
    const pids = spawnSync("ip", ["netns", "pids", this.ns.name], { encoding: "utf8" })
      .stdout.split(/\s+/)
      .filter(Boolean);
    for (const pid of pids) {
      try {
        const nspid = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
        const ids = nspid?.trim().split(/\s+/) ?? [];
        if (ids.length > 1 && ids[ids.length - 1] === "1") return Number(pid);
      } catch {}
    }
    return 0;
  }

  /** Runs a shell script inside the container (every namespace of its PID 1), as root. */
  sh(script: string, input?: string): string {
    return execFileSync("nsenter", ["-t", String(this.leader), "-a", "sh", "-c", script], {
      encoding: "utf8",
      env: CONTAINER_ENV,
      input,
      timeout: 60_000,
      stdio: ["pipe", "pipe", "pipe"],
    });
  }

  /** Like sh, with the exit code instead of a throw. */
  status(script: string): { code: number | null; out: string } {
    const r = spawnSync("nsenter", ["-t", String(this.leader), "-a", "sh", "-c", script], {
      encoding: "utf8",
      env: CONTAINER_ENV,
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout + r.stderr };
  }

  /** Orderly poweroff (SIGTERM to nspawn), killed after 30 s. */
  async stop(): Promise<void> {
    if (this.exited) return;
    this.nspawn.kill("SIGTERM");
    const deadline = Date.now() + 30_000;
    while (!this.exited && Date.now() < deadline) await sleep(200);
    if (!this.exited) {
      this.nspawn.kill("SIGKILL");
      // Whatever of the container outlives nspawn is in the test's namespace: ns.destroy().
      this.ns.destroy();
      await sleep(500);
    }
  }
}

describe.skipIf(gate.skip)("installed by name and run by systemd in clean containers", () => {
  let dir: string;
  let registry: LocalRegistry | undefined;
  const overlays: string[] = [];
  const containers: BootedContainer[] = [];
  let server: BootedContainer;
  let client: BootedContainer;
  let nsS: Netns;
  let nsC: Netns;
  let installLog = "";
  let noCompiler = "";
  const started = Date.now();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ftsv-"));
    const missing = ensureNspawn();
    if (missing) throw new Error(missing);
    const made = spawnSync("bash", [join(root, "docker/make-systemd-rootfs.sh")], {
      encoding: "utf8",
      timeout: 1_200_000,
    });
    if (made.status !== 0)
      throw new Error(`make-systemd-rootfs.sh failed: ${made.stderr.slice(-500)}`);
    const rootfs = made.stdout.trim().split("\n").pop()!;
    console.log(`root file system ready after ${Math.round((Date.now() - started) / 1000)} s`);

    registry = await startLocalRegistry(dir);
    console.log(
      `registry up, packages published after ${Math.round((Date.now() - started) / 1000)} s`,
    );

    // 1. Install by name, in the clean root, through its own npm (the host's network: the
    //    registry listens on the host's loopback).
    const installDir = join(dir, "install");
    const installRoot = mountOverlay(installDir, rootfs);
    overlays.push(installRoot);
    const install = spawnSync(
      "systemd-nspawn",
      [
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--pipe",
        `--directory=${installRoot}`,
        "--resolv-conf=off",
        "--setenv=HOME=/root",
        "sh",
        "-c",
        [
          "for t in cc gcc g++ make python3; do command -v $t; done",
          "echo ---",
          `npm install -g --registry ${registry.url} --foreground-scripts --no-audit --no-fund --cache /tmp/npm-cache fake-tcp-server fake-tcp-client`,
          "echo ---",
          "fake-tcp-server --version && fake-tcp-client --version",
          'find "$(npm root -g)" -name tun.node',
          "rm -rf /tmp/npm-cache /root/.npm",
        ].join("\n"),
      ],
      { encoding: "utf8", timeout: 600_000, stdio: ["ignore", "pipe", "pipe"] },
    );
    installLog = install.stdout + install.stderr;
    unmount(installRoot);
    overlays.pop();
    if (install.status !== 0)
      throw new Error(`install in the container failed:\n${installLog.slice(-1500)}`);
    noCompiler = installLog.split("---")[0]!.trim();
    console.log(`installed by name after ${Math.round((Date.now() - started) / 1000)} s`);

    // 2. Two containers booted from the installed root, linked through the test's namespaces.
    nsS = new Netns("ftsvs");
    nsC = new Netns("ftsvc");
    linkNamespaces(nsC, "10.82.0.1/24", nsS, "10.82.0.2/24");
    for (const [side, ns] of [
      ["server", nsS],
      ["client", nsC],
    ] as const) {
      const merged = mountOverlay(join(dir, side), `${join(installDir, "upper")}:${rootfs}`);
      overlays.push(merged);
      const c = new BootedContainer(ns.name, merged, ns, join(dir, `${side}-console.log`));
      containers.push(c);
      if (side === "server") server = c;
      else client = c;
    }
    for (const c of containers) {
      const state = await c.booted();
      if (state !== "running")
        console.log(`${c.name}: ${state}\n${c.sh("systemctl --failed --no-pager")}`);
    }
    console.log(`containers booted after ${Math.round((Date.now() - started) / 1000)} s`);
  }, 1_800_000);

  afterAll(async () => {
    for (const c of containers) await c.stop();
    for (const merged of overlays) unmount(merged);
    registry?.stop();
    cleanupAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
    console.log(`service test done after ${Math.round((Date.now() - started) / 1000)} s`);
  }, 120_000);

  it("installs by name from the local registry with no compiler present, using the shipped addon", () => {
    expect(noCompiler).toBe("");
    const [, , after = ""] = installLog.split("---");
    const lines = after.trim().split("\n");
    expect(lines.slice(0, 2)).toEqual(["0.1.0", "0.1.0"]);
    const addons = lines.filter((l) => l.endsWith("tun.node"));
    expect(addons.length).toBeGreaterThan(0);
    for (const addon of addons) expect(addon).toMatch(/\/prebuilds\/linux-x64-glibc\/tun\.node$/);
  });

  it("runs a config-file tunnel as fake-tcp with only CAP_NET_ADMIN and CAP_BPF: start, traffic both ways, stop, nothing left", async () => {
    // The README's "Configure": the shipped WireGuard example, edited where a user would (the
    // client's server address); a tun name of this test's own, two shards and both time
    // slices (the system call they need is outside the units' filter's groups) appended.
    const configure = {
      server: [
        "printf 'tun = \"ftsvs0\"\\nipv4-only = true\\nqueues = 2\\ntime-slice = 10\\n' >> $F",
      ],
      client: [
        "sed -i 's/^remote = .*/remote = \"10.82.0.2:4567\"/' $F",
        "printf 'tun = \"ftsvc0\"\\nipv4-only = true\\ntime-slice = 10\\n' >> $F",
      ],
    };
    for (const [side, c] of [
      ["server", server],
      ["client", client],
    ] as const) {
      c.sh(
        [
          "set -e",
          // nspawn gives the container a copy of the host's /dev/net/tun with the host's mode;
          // a stock system (and the README's requirement) has it 0666.
          "chmod 0666 /dev/net/tun",
          // Configure.
          "F=/etc/fake-tcp/wg0.toml",
          "install -d -m 755 /etc/fake-tcp",
          `cp "$(npm root -g)/fake-tcp-${side}/examples/wireguard-${side}.toml" $F`,
          ...configure[side],
          // Run as a service, as the README says, from the installed package's files.
          `S=$(npm root -g)/fake-tcp-${side}/systemd`,
          "install -m 644 $S/fake-tcp.sysusers.conf /usr/lib/sysusers.d/fake-tcp.conf && systemd-sysusers",
          `install -m 644 $S/fake-tcp-${side}@.service /etc/systemd/system/ && systemctl daemon-reload`,
          "chgrp -R fake-tcp /etc/fake-tcp && chmod -R g+rX,o= /etc/fake-tcp",
        ].join("\n"),
      );
    }

    const echo = nsS.spawn(process.execPath, ["-e", udpEchoScript(51820)]);
    let echoOut = "";
    echo.stdout!.on("data", (d) => {
      echoOut += d;
    });
    const deadline = Date.now() + 10_000;
    while (!echoOut.includes("ready") && Date.now() < deadline) await sleep(50);
    expect(echoOut).toContain("ready");

    const units = [
      [server, "fake-tcp-server@wg0", "fake-tcp-server running", "ftsvs0"],
      [client, "fake-tcp-client@wg0", "fake-tcp-client running", "ftsvc0"],
    ] as const;
    for (const [c, unit, ready] of units) {
      c.sh(`systemctl enable --now ${unit}`);
      // Type=exec: started means exec'd; ready is the program's own log line.
      const until = Date.now() + 30_000;
      let journal = "";
      while (Date.now() < until) {
        journal = c.sh(`journalctl -u ${unit} -o cat --no-pager`);
        if (journal.includes(ready)) break;
        await sleep(300);
      }
      expect(journal, `${unit} journal`).toContain(ready);
      expect(c.sh(`systemctl is-active ${unit}`).trim()).toBe("active");

      // The main process: the user fake-tcp, exactly the two capabilities, nothing else.
      const pid = c.sh(`systemctl show -p MainPID --value ${unit}`).trim();
      const status = c.sh(`cat /proc/${pid}/status`);
      const uid = c.sh("id -u fake-tcp").trim();
      expect(uid).not.toBe("0");
      expect(/^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status)?.slice(1)).toEqual([
        uid,
        uid,
        uid,
        uid,
      ]);
      for (const set of ["CapEff", "CapPrm", "CapAmb", "CapBnd"]) {
        const mask = BigInt(`0x${new RegExp(`^${set}:\\s+([0-9a-f]+)`, "m").exec(status)?.[1]}`);
        expect(mask.toString(16), `${unit} ${set}`).toBe(UNIT_CAPS.toString(16));
      }
      expect(status).toMatch(/^NoNewPrivs:\s+1$/m);

      // time-slice = 10 under the unit's system call filter: each shard thread has its 10 ms
      // (where the host's kernel keeps per-thread slices: checked on this thread first).
      expect(journal).not.toContain("time slice: could not be set");
      const shards = Number(
        /"shards":(\d+),.*"msg":"fake-tcp-(?:server|client) running"/.exec(journal)?.[1],
      );
      const sliced = schedSlices(c.sh(`cat /proc/${pid}/task/*/sched`)).filter(
        (slice) => slice === 10_000_000,
      );
      if (schedSlices(readFileSync("/proc/thread-self/sched", "utf8")).length > 0)
        expect(sliced.length, `${unit} threads with a 10 ms slice`).toBe(shards);
    }
    // CAP_BPF lets the server's queue-steering program load: both shards run.
    expect(server.sh("journalctl -u fake-tcp-server@wg0 -o cat --no-pager")).toMatch(
      /"shards":2,.*"msg":"fake-tcp-server running"/,
    );

    // Traffic: datagrams client -> server (counted by the echo server) and back (the echoes).
    const sent = run("ip", [
      "netns",
      "exec",
      nsC.name,
      process.execPath,
      "-e",
      udpPingScript(51821),
      "20",
    ]);
    expect(Number(sent.trim())).toBe(20);

    for (const [c, unit, , tun] of units.slice().reverse()) {
      c.sh(`systemctl stop ${unit}`);
      expect(c.status(`systemctl is-active ${unit}`).out.trim()).toBe("inactive");
      expect(c.sh(`systemctl show -p Result --value ${unit}`).trim()).toBe("success");
      expect(c.sh(`systemctl show -p ExecMainStatus --value ${unit}`).trim()).toBe("0");
      // Nothing left: no process of the user, no TUN device, no nftables table of the tunnel.
      expect(c.status("pgrep -u fake-tcp -a").code).toBe(1);
      expect(c.sh("ip -o link show")).not.toContain(tun);
      expect(c.sh("nft list tables")).not.toContain("fake_tcp");
    }
    echo.kill("SIGTERM");
    const until = Date.now() + 5_000;
    while (!/^\d+$/m.test(echoOut.replace("ready", "")) && Date.now() < until) await sleep(50);
    expect(Number(echoOut.replace("ready", "").trim())).toBe(20);
  }, 180_000);
});
