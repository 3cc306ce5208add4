/**
 * Shards of both programs, in two namespaces linked by a veth pair: one shard per TUN queue
 * when the device can steer, each carrying exactly the flows the kernel steers to its queue
 * (seen in the per-shard counters of the stats line), and one shard (with the reason logged)
 * when the eBPF steering program cannot be loaded because the process lacks CAP_BPF /
 * CAP_SYS_ADMIN (dropped with setpriv). Either way the program tears down on SIGTERM within
 * 2 s and leaves nothing behind.
 *
 *   senders (UDP) -> fake-tcp-client, 2 queues [nsC] == veth == [nsS] fake-tcp-server, 3 queues -> echo
 */
import { readdirSync, readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { schedSlices } from "../../../test-support/sched.js";
import { startUdpEcho } from "../../../test-support/udp-scripts.js";
import { RunningProgram } from "../../common/test/program-harness.js";

const gate = realDeviceGate();

const LISTEN_PORT = 4567;
/**
 * UDP flows through the tunnel. Each lands on a random client shard (SO_REUSEPORT hash) and
 * gets a random client port, hence a random server queue: with 30 flows the chance that
 * some shard of the 3 gets none is 3 * (2/3)^30, about 1 in 70,000.
 */
const FLOWS = 30;
const PER_FLOW = 3;

/**
 * FLOWS sockets on their own ports, each connected to 127.0.0.1:PORT, send PER_FLOW datagrams
 * and wait (bounded) for the echoes; prints the number of echoes per flow as JSON.
 */
const SENDERS = `
const dgram = require("node:dgram");
const [port, flows, perFlow, waitMs] = process.argv.slice(1).map(Number);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const echoed = new Array(flows).fill(0);
  const sockets = [];
  for (let f = 0; f < flows; f++) {
    const s = dgram.createSocket("udp4");
    s.on("message", () => echoed[f]++);
    await new Promise((r) => s.bind(0, "127.0.0.1", r));
    await new Promise((r) => s.connect(port, "127.0.0.1", r));
    sockets.push(s);
  }
  for (let n = 0; n < perFlow; n++) {
    for (const s of sockets) s.send(Buffer.from("flow-datagram"));
    await sleep(50);
  }
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline && echoed.some((e) => e < perFlow)) await sleep(20);
  console.log(JSON.stringify(echoed));
  for (const s of sockets) s.close();
})();
`;

/** Per-shard counters of a stats line (see `programStats` in fake-tcp-common). */
type ShardCounters = Record<string, number>;

/** Asks for the counters (SIGUSR1) and waits for the new stats line. */
async function requestStats(program: RunningProgram): Promise<Record<string, unknown>> {
  const before = program.logged("stats").length;
  program.child.kill("SIGUSR1");
  return program.waitFor("stats", () => program.logged("stats").length > before);
}

/** The number of queues attached to TUN device `name` (the kernel's view). */
function attachedQueues(ns: Netns, name: string): number {
  const details = ns.exec("ip", ["-d", "link", "show", name]);
  if (!/\btun type tun\b/.test(details)) throw new Error(`${name} is not a TUN: ${details}`);
  // A single-queue device (no IFF_MULTI_QUEUE) has no queue count to show.
  if (!/\bmulti_queue\b/.test(details)) return 1;
  const match = /numqueues (\d+)/.exec(details);
  if (!match) throw new Error(`no numqueues for ${name} in \`ip -d link show\`: ${details}`);
  return Number(match[1]);
}

/** Port of an "ADDR:PORT" log field. */
function portOf(address: unknown): number {
  return Number(String(address).split(":").pop());
}

/**
 * How many of a program's threads run with a time slice of `ns`; null where the kernel keeps
 * no per-thread slice (before Linux 6.12).
 */
function threadsWithSlice(pid: number, ns: number): number | null {
  const sched = readdirSync(`/proc/${pid}/task`)
    .map((tid) => readFileSync(`/proc/${pid}/task/${tid}/sched`, "utf8"))
    .join("");
  const slices = schedSlices(sched);
  return slices.length === 0 ? null : slices.filter((slice) => slice === ns).length;
}

describe.skipIf(gate.skip)("sharding", () => {
  let nsC: Netns;
  let nsS: Netns;
  beforeAll(async () => {
    nsC = new Netns("ftshc");
    nsS = new Netns("ftshs");
    linkNamespaces(nsC, "10.78.0.1/24", nsS, "10.78.0.2/24");
    await startUdpEcho(nsS, 7777);
  });
  afterAll(() => cleanupAll());

  async function stopCleanly(program: RunningProgram, ns: Netns, tun: string): Promise<void> {
    const stopped = await program.stop();
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(2_000);
    expect(ns.exec("ip", ["-o", "link", "show"])).not.toContain(tun);
    expect(ns.exec("nft", ["list", "ruleset"])).not.toContain(`fake_tcp_${tun}`);
  }

  /**
   * Checks that each shard carried traffic, and exactly the connections whose ports steer to
   * its queue: `port` of each "connection opened" line + LISTEN_PORT, in 16 bits, modulo the shards.
   */
  async function expectSteeredShards(
    program: RunningProgram,
    shards: number,
    portField: "peer" | "local",
    directions: readonly string[],
  ): Promise<void> {
    await program.waitFor(
      "connection opened",
      () => program.logged("connection opened").length >= FLOWS,
    );
    const stats = await requestStats(program);
    const perShard = stats.shards as ShardCounters[];
    expect(perShard).toHaveLength(shards);
    const expectedOpened = new Array(shards).fill(0);
    // The kernel keeps the steering program's port sum in 16 bits before the modulo.
    for (const line of program.logged("connection opened"))
      expectedOpened[((portOf(line[portField]) + LISTEN_PORT) % 65536) % shards]++;
    expect(perShard.map((s) => s.opened)).toEqual(expectedOpened);
    for (const direction of directions) {
      for (const [index, shard] of perShard.entries())
        expect(shard[direction], `shard ${index} ${direction}`).toBeGreaterThan(0);
      // The per-shard counters add up to the totals: together they carried everything.
      expect(perShard.reduce((n, s) => n + s[direction], 0)).toBe(stats[direction]);
      expect(stats[direction]).toBe(FLOWS * PER_FLOW);
    }
    expect(stats.connections).toBe(FLOWS);
  }

  it("runs one shard per queue, each carrying the flows steered to its queue", async () => {
    const server = new RunningProgram(nsS, "server", [
      ...["--listen", String(LISTEN_PORT), "--remote", "127.0.0.1:7777"],
      ...["--tun", "ftsh0", "--queues", "3", "--stats-interval", "0", "--time-slice", "10"],
    ]);
    expect((await server.waitFor("fake-tcp-server running")).shards).toBe(3);
    expect(attachedQueues(nsS, "ftsh0")).toBe(3);
    const client = new RunningProgram(nsC, "client", [
      ...["--local", "2345", "--remote", `10.78.0.2:${LISTEN_PORT}`],
      ...["--tun", "ftsh1", "--queues", "2", "--stats-interval", "0", "--time-slice", "3"],
    ]);
    expect((await client.waitFor("fake-tcp-client running")).shards).toBe(2);
    expect(attachedQueues(nsC, "ftsh1")).toBe(2);
    // Each shard thread, and only those, asked for its time slice: 10 ms on the server, 3 on
    // the client (null: this kernel keeps no per-thread slice).
    const slices = threadsWithSlice(server.child.pid!, 10_000_000);
    if (slices !== null) {
      expect(slices).toBe(3);
      expect(threadsWithSlice(client.child.pid!, 3_000_000)).toBe(2);
    }

    const stdout = await nsC.runNodeScript(
      SENDERS,
      ["2345", String(FLOWS), String(PER_FLOW), "5000"],
      20_000,
    );
    expect(JSON.parse(stdout)).toEqual(new Array(FLOWS).fill(PER_FLOW));

    // Client: its port p of a connection steers the server's answers to queue (4567 + p) % 2.
    await expectSteeredShards(client, 2, "local", ["udpToTunnel", "tunnelToUdp"]);
    // Server: the client's port p steers its segments to queue (p + 4567) % 3.
    await expectSteeredShards(server, 3, "peer", ["tunnelToUdp", "udpToTunnel"]);

    await stopCleanly(client, nsC, "ftsh1");
    await stopCleanly(server, nsS, "ftsh0");
  });

  it("without CAP_BPF / CAP_SYS_ADMIN runs one shard and says why", async () => {
    const caps = "-bpf,-sys_admin";
    const server = new RunningProgram(
      nsS,
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
      expect(attachedQueues(nsS, "ftsh2")).toBe(2);
    } else {
      expect(running.shards).toBe(1);
      const warning = server.logged("TUN queue steering unavailable, running one shard");
      expect(warning).toHaveLength(1);
      expect(String(warning[0].reason)).toMatch(/EPERM/);
      // The device itself has one queue: no packet can land on a queue nobody reads.
      expect(attachedQueues(nsS, "ftsh2")).toBe(1);
      // One shard: the stats line has the totals only.
      expect((await requestStats(server)).shards).toBeUndefined();
    }
    await stopCleanly(server, nsS, "ftsh2");
  });
});
