/**
 * `fake-tcp-server` command line, run as the built program inside a throw-away namespace:
 * bad input exits 2 with one line; phantun's `--local` works as `--listen`; SIGTERM tears
 * the host setup down.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import {
  expectOneLineError,
  nftTableRules,
  RunningProgram,
  runProgram,
} from "../../common/test/program-harness.js";

const gate = realDeviceGate();

describe.skipIf(gate.skip)("fake-tcp-server command line", () => {
  let ns: Netns;
  beforeAll(() => {
    ns = new Netns("ftcs");
  });
  afterAll(cleanupAll);

  const remote = ["--remote", "127.0.0.1:51820"];
  it.each([
    [[...remote], /missing required option --listen/],
    [["--listen", "4567"], /missing required option --remote/],
    [["--listen", "port", ...remote], /--listen: "port" is not a port number/],
    [["--listen", "0", ...remote], /--listen: port 0 is out of range/],
    [["--listen", "4567", "--remote", "51820"], /--remote: "51820" is not HOST:PORT/],
    [["--listen", "4567", "--remote", "no-such-app.invalid:1"], /cannot resolve host/],
    [["--listen", "4567", ...remote, "--keepalive", "-5"], /--keepalive/],
    [["--listen", "4567", ...remote, "--max-connections", "lots"], /--max-connections/],
    [["--listen", "4567", ...remote, "--tun-local6", "fcc9::2"], /must differ/],
    [["--listen", "4567", ...remote, "--local", "4568"], /given more than once/],
    [["--listen", "4567", ...remote, "--frob"], /unknown option --frob/],
    [
      ["--listen", "4567", ...remote, "--tun", 'x"accept#'],
      /--tun: .* is not a valid interface name/,
    ],
    [
      ["--listen", "4567", ...remote, "--handshake-packet", "/dev/zero"],
      /--handshake-packet: \/dev\/zero is not a regular file/,
    ],
    [
      ["--listen", "4567", ...remote, "--key-file", "/nonexistent/tunnel.key"],
      /--key-file: \/nonexistent\/tunnel.key does not exist; make one with `fake-tcp-server genkey > FILE`/,
    ],
    [
      ["--listen", "4567", ...remote, "--key-file", "/etc/hostname"],
      /--key-file: \/etc\/hostname is not a key/,
    ],
    [["--listen", "443", ...remote, "--share"], /--share needs --key-file/],
    [
      ["--listen", "443", ...remote, "--share-queue", "70000"],
      /--share-queue: "70000" is not a whole number from 0 to 65535/,
    ],
  ])("%j", (args, message) => {
    const line = expectOneLineError(runProgram(ns, "server", args));
    expect(line).toMatch(/^fake-tcp-server: error: /);
    expect(line).toMatch(message);
  });

  it("genkey prints a new key for --key-file; extra arguments are refused", () => {
    const first = runProgram(ns, "server", ["genkey"]);
    const second = runProgram(ns, "server", ["genkey"]);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    expect(second.stdout).not.toBe(first.stdout);
    const line = expectOneLineError(runProgram(ns, "server", ["genkey", "extra"]));
    expect(line).toMatch(/^fake-tcp-server: error: genkey takes no arguments/);
  });
  it("takes phantun's --local for --listen, rewrites that port to the stack, and cleans up on SIGTERM", async () => {
    const server = new RunningProgram(ns, "server", [
      "--local",
      "4567",
      ...remote,
      "--tun",
      "ftsl0",
    ]);
    const added = await server.waitFor("nft rules added");
    expect(added.rules).toEqual([
      'iifname != "ftsl0" tcp dport 4567 fib daddr type local update @clients4 { tcp sport . ip saddr : ip daddr } notrack ip daddr set 192.168.201.2',
      'iifname != "ftsl0" tcp dport 4567 fib daddr type local update @clients6 { ip6 saddr : ip6 daddr } notrack ip6 daddr set fcc9::2',
      'iifname "ftsl0" tcp sport 4567 notrack',
      'oifname != "ftsl0" ip saddr 192.168.201.2 tcp sport 4567 ip saddr set tcp dport . ip daddr map @clients4',
      'oifname != "ftsl0" ip6 saddr fcc9::2 tcp sport 4567 ip6 saddr set ip6 daddr map @clients6',
      'oifname != "ftsl0" ip saddr 192.168.201.2 tcp sport 4567 drop',
      'oifname != "ftsl0" ip6 saddr fcc9::2 tcp sport 4567 drop',
    ]);
    await server.waitFor("fake-tcp-server running");
    // What the kernel holds, not only what the log says was added.
    expect(nftTableRules(ns, "fake_tcp_ftsl0")).toEqual(added.rules);
    expect(ns.exec("cat", ["/proc/sys/net/ipv6/conf/all/forwarding"]).trim()).toBe("1");
    expect(ns.exec("ip", ["-o", "addr", "show", "dev", "ftsl0"])).toContain("192.168.201.1");
    const stopped = await server.stop();
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(2_000);
    expect(ns.exec("nft", ["list", "ruleset"])).not.toContain("fake_tcp_ftsl0");
    expect(ns.exec("ip", ["-o", "link", "show"])).not.toContain("ftsl0");
  });

  it("-4 adds IPv4 rules only", async () => {
    const server = new RunningProgram(ns, "server", [
      "--listen",
      "4567",
      ...remote,
      "--tun",
      "ftsl1",
      "-4",
    ]);
    const added = await server.waitFor("nft rules added");
    expect(added.rules).toEqual([
      'iifname != "ftsl1" tcp dport 4567 fib daddr type local update @clients4 { tcp sport . ip saddr : ip daddr } notrack ip daddr set 192.168.201.2',
      'iifname "ftsl1" tcp sport 4567 notrack',
      'oifname != "ftsl1" ip saddr 192.168.201.2 tcp sport 4567 ip saddr set tcp dport . ip daddr map @clients4',
      'oifname != "ftsl1" ip saddr 192.168.201.2 tcp sport 4567 drop',
    ]);
    await server.waitFor("fake-tcp-server running");
    expect(nftTableRules(ns, "fake_tcp_ftsl1")).toEqual(added.rules);
    expect((await server.stop()).code).toBe(0);
  });
});
