/**
 * A device deleted under an active reader (`ip link del`): the queue notices the error,
 * counts it and stops polling instead of spinning on an fd that stays in error; writes
 * become drops; close stays clean.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { Agent } from "./agent.js";
import { udpPacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.206.0.1", peer: "10.206.0.2" };

/** CPU ticks (user + system) a process has used so far. */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

describe.skipIf(gate.skip)("TUN device deleted under an active reader", () => {
  let ns: Netns;
  let agent: Agent;

  beforeAll(async () => {
    ns = new Netns("fttgone");
    ({ agent } = await Agent.start(ns, { name: "ftgone0", ipv4: V4 }));
  });
  afterAll(async () => {
    await agent?.close().catch(() => {});
    cleanupAll();
  });

  it("counts a read error, does not spin, and drops later writes", async () => {
    ns.exec("ip", ["link", "del", "ftgone0"]);
    await new Promise((r) => setTimeout(r, 200));
    const pid = agent.child.pid!;
    const before = cpuTicks(pid);
    await new Promise((r) => setTimeout(r, 500));
    const used = cpuTicks(pid) - before;
    expect(used).toBeLessThan(10); // a spinning reader would burn ~50 ticks in 500 ms
    const [stats] = await agent.request("stats");
    expect(stats.readErrors).toBe(1);
    const packet = udpPacket(V4.peer, 1, V4.local, 2, Buffer.from("late"));
    expect(await agent.request("write", { hex: packet.toString("hex") })).toBe(false);
    const bye = await agent.close();
    expect(bye?.fds.tun).toBe(0);
  });
});
