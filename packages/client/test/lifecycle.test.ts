/**
 * The client's host setup and teardown in a throw-away namespace: the nft table and the TUN
 * device exist while it runs, SIGTERM removes both and exits 0 within 2 s, and after a
 * SIGKILL the next start replaces the stale table.
 */
import { availableParallelism } from "node:os";
import { afterAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { nftTableRules, RunningProgram } from "../../common/test/program-harness.js";
import { defaultFlows } from "../src/cli.js";

const gate = realDeviceGate();

function hasTable(ns: Netns, table: string): boolean {
  return ns.exec("nft", ["list", "tables"]).includes(`table inet ${table}`);
}

function hasLink(ns: Netns, name: string): boolean {
  return ns.exec("ip", ["-o", "link", "show"]).includes(` ${name}:`);
}

describe.skipIf(gate.skip)("fake-tcp-client lifecycle", () => {
  afterAll(cleanupAll);

  it("sets up, tears down on SIGTERM, and replaces a stale table after SIGKILL", async () => {
    const ns = new Netns("ftcl");
    const args = ["--local", "1234", "--remote", "127.0.0.1:4567", "--tun", "ftcl0"];
    ns.exec("sh", ["-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);

    const first = new RunningProgram(ns, "client", args);
    const added = await first.waitFor("nft rules added");
    expect(added.rules).toEqual([
      'iifname "ftcl0" ip saddr 192.168.200.2 update @flows4 { ip daddr . tcp dport . tcp sport } notrack',
      'iifname != "ftcl0" ip saddr . tcp sport . tcp dport @flows4 fib daddr type local notrack ip daddr set 192.168.200.2',
      'iifname "ftcl0" ip6 saddr fcc8::2 update @flows6 { ip6 daddr . tcp dport . tcp sport } notrack',
      'iifname != "ftcl0" ip6 saddr . tcp sport . tcp dport @flows6 fib daddr type local notrack ip6 daddr set fcc8::2',
      'oifname != "ftcl0" ip saddr 192.168.200.2 ip saddr set ip daddr map @egress4',
      'oifname != "ftcl0" ip6 saddr fcc8::2 ip6 saddr set ip6 daddr map @egress6',
      'oifname != "ftcl0" ip saddr 192.168.200.2 drop',
      'oifname != "ftcl0" ip6 saddr fcc8::2 drop',
      "ip daddr . tcp dport . tcp sport @flows4 drop",
      "ip6 daddr . tcp dport . tcp sport @flows6 drop",
    ]);
    await first.waitFor("fake-tcp-client running");
    // What the kernel holds, not only what the log says was added.
    expect(nftTableRules(ns, "fake_tcp_ftcl0")).toEqual(added.rules);
    expect(hasLink(ns, "ftcl0")).toBe(true);
    expect(ns.exec("cat", ["/proc/sys/net/ipv4/ip_forward"]).trim()).toBe("1");
    expect(first.logged("forwarding enabled (restored at exit)")).toHaveLength(1);

    // SIGUSR1 logs the counters.
    first.child.kill("SIGUSR1");
    const stats = await first.waitFor("stats");
    expect(stats.connections).toBe(0);

    const stopped = await first.stop("SIGTERM");
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(2_000);
    expect(hasTable(ns, "fake_tcp_ftcl0")).toBe(false);
    expect(hasLink(ns, "ftcl0")).toBe(false);
    expect(first.logged("nft rules removed")).toHaveLength(1);

    const crashed = new RunningProgram(ns, "client", args);
    await crashed.waitFor("fake-tcp-client running");
    await crashed.stop("SIGKILL");
    expect(hasTable(ns, "fake_tcp_ftcl0")).toBe(true);

    const restarted = new RunningProgram(ns, "client", args);
    await restarted.waitFor("fake-tcp-client running");
    expect(restarted.logged("removed stale nft table left by an earlier run")).toHaveLength(1);
    expect(ns.exec("nft", ["list", "ruleset"]).match(/table inet fake_tcp_ftcl0/g)).toHaveLength(1);
    const again = await restarted.stop("SIGINT");
    expect(again.code).toBe(0);
    expect(hasTable(ns, "fake_tcp_ftcl0")).toBe(false);
    ns.destroy();
  });

  it("--no-auto-rules leaves nft and forwarding alone; stats at the interval", async () => {
    const ns = new Netns("ftcl");
    ns.exec("sh", ["-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    const program = new RunningProgram(ns, "client", [
      "--local",
      "1234",
      "--remote",
      "127.0.0.1:4567",
      "--no-auto-rules",
      "--stats-interval",
      "0.2",
    ]);
    const running = await program.waitFor("fake-tcp-client running");
    // The default --flows is logged as chosen: one flow per shard, at most half the cores (one
    // on a 2-core host, where the applications need the other core).
    expect(running.flows).toBe(defaultFlows(running.shards as number, availableParallelism()));
    if (availableParallelism() < 4) expect(running.flows).toBe(1);
    // Counters arrive on their own at the stats interval.
    const stats = await program.waitFor("stats", () => true, 3_000);
    expect(stats.level).toBe(30);
    expect(stats).toMatchObject({ connections: 0, opened: 0, udpToTunnel: 0, tunnelToUdp: 0 });
    expect(ns.exec("nft", ["list", "ruleset"]).trim()).toBe("");
    expect(ns.exec("cat", ["/proc/sys/net/ipv4/ip_forward"]).trim()).toBe("0");
    expect((await program.stop()).code).toBe(0);
    ns.destroy();
  });
});
