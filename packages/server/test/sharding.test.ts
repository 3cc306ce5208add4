/**
 * Shards of both programs in a namespace: one worker per TUN queue when the device can steer,
 * and one shard (with the reason logged) when the eBPF steering program cannot be loaded
 * because the process lacks CAP_BPF / CAP_SYS_ADMIN (dropped with setpriv). Either way the
 * program tears down on SIGTERM within 2 s and leaves nothing behind.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { RunningProgram } from "../../common/test/program-harness.js";

const gate = realDeviceGate();

describe.skipIf(gate.skip)("sharding", () => {
  let ns: Netns;
  beforeAll(() => {
    ns = new Netns("ftsh");
  });
  afterAll(() => cleanupAll());

  async function stopCleanly(program: RunningProgram, tun: string): Promise<void> {
    const stopped = await program.stop();
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(2_000);
    expect(ns.exec("ip", ["-o", "link", "show"])).not.toContain(tun);
    expect(ns.exec("nft", ["list", "ruleset"])).not.toContain(`fake_tcp_${tun}`);
  }

  it("runs one shard per queue, each in its own worker thread", async () => {
    const server = new RunningProgram(ns, "server", [
      ...["--listen", "4567", "--remote", "127.0.0.1:9", "--tun", "ftsh0", "--queues", "3"],
    ]);
    const running = await server.waitFor("fake-tcp-server running");
    expect(running.shards).toBe(3);
    expect((await server.waitFor("TUN device up")).queues).toBe(3);
    const client = new RunningProgram(ns, "client", [
      ...["--local", "2345", "--remote", "127.0.0.1:4567", "--tun", "ftsh1", "--queues", "2"],
    ]);
    expect((await client.waitFor("fake-tcp-client running")).shards).toBe(2);
    // Stats are summed over the shards: the stack's counters are one record.
    client.child.kill("SIGUSR1");
    const stats = await client.waitFor("stats");
    expect(stats.connections).toBe(0);
    expect(typeof (stats.stack as Record<string, unknown>).packetsReceived).toBe("number");
    await stopCleanly(client, "ftsh1");
    await stopCleanly(server, "ftsh0");
  });

  it("without CAP_BPF / CAP_SYS_ADMIN runs one shard and says why", async () => {
    const caps = "-bpf,-sys_admin";
    const server = new RunningProgram(
      ns,
      "server",
      ["--listen", "4568", "--remote", "127.0.0.1:9", "--tun", "ftsh2", "--queues", "2"],
      { wrapper: ["setpriv", "--bounding-set", caps, "--inh-caps", caps] },
    );
    const running = await server.waitFor("fake-tcp-server running");
    const unprivilegedBpf =
      readFileSync("/proc/sys/kernel/unprivileged_bpf_disabled", "utf8").trim() === "0";
    if (unprivilegedBpf) {
      // Socket filters are open to everyone on such a kernel: steering works anyway.
      expect(running.shards).toBe(2);
    } else {
      expect(running.shards).toBe(1);
      const warning = server.logged("TUN queue steering unavailable, running one shard");
      expect(warning).toHaveLength(1);
      expect(String(warning[0].reason)).toMatch(/EPERM/);
      expect((await server.waitFor("TUN device up")).queues).toBe(1);
    }
    await stopCleanly(server, "ftsh2");
  });
});
