/**
 * A device deleted under an active reader (`ip link del`): the queue notices the error,
 * counts it and stops polling instead of spinning on an fd that stays in error; writes
 * become drops; close stays clean.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { Agent } from "./agent.js";
import { udpPacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.206.0.1", peer: "10.206.0.2" };

/** The first queue's counters, as the agent reports them. */
async function queueStats(agent: Agent): Promise<Record<string, number>> {
  const [stats] = await agent.request("stats");
  return stats;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
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
    // The error wakes the reader once (bounded wait)...
    const deadline = Date.now() + 5_000;
    let stats = await queueStats(agent);
    while (stats.readErrors === 0 && Date.now() < deadline) {
      await sleep(20);
      stats = await queueStats(agent);
    }
    expect(stats.readErrors).toBe(1);
    // ...and never again: a reader still polling the fd, which stays in error, would be woken
    // (and count an error) on every turn of the event loop. Counting wake-ups, unlike CPU
    // time, does not depend on how busy the machine is.
    await sleep(500);
    expect((await queueStats(agent)).readErrors).toBe(1);
    const packet = udpPacket(V4.peer, 1, V4.local, 2, Buffer.from("late"));
    expect(await agent.request("write", { hex: packet.toString("hex") })).toBe(false);
    const bye = await agent.close();
    expect(bye?.fds.tun).toBe(0);
  });
});
