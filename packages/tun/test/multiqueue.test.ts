/**
 * Multi-queue: the kernel spreads flows over the queues of one device; every packet is read
 * exactly once, by exactly one queue.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { Agent } from "./agent.js";
import { parsePacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.202.0.1", peer: "10.202.0.2" };
const FLOWS = 8;
const PER_FLOW = 50;

describe.skipIf(gate.skip)("multi-queue TUN (real device in a namespace)", () => {
  let ns: Netns;
  let agent: Agent;

  beforeAll(async () => {
    ns = new Netns("fttmq");
    ({ agent } = await Agent.start(ns, { name: "ftmq0", queues: 4, ipv4: V4, batchSize: 16 }));
  });
  afterAll(async () => {
    await agent?.close().catch(() => {});
    cleanupAll();
  });

  it("spreads 8 UDP flows over the queues, each packet read exactly once", async () => {
    const tag = "mqflow";
    for (let f = 0; f < FLOWS; f++) {
      await agent.request("udpSend", {
        family: 4,
        addr: V4.peer,
        port: 7000,
        srcPort: 41000 + f,
        count: PER_FLOW,
        seq: true,
        hex: Buffer.from(`${tag}-${f}-`).toString("hex"),
      });
    }
    const total = FLOWS * PER_FLOW;
    const ours = () =>
      agent.packets().flatMap(({ q, data }) => {
        const p = parsePacket(data);
        if (p?.proto !== 17 || p.dport !== 7000) return [];
        return [{ q, sport: p.sport, id: p.l4.subarray(8).toString() }];
      });
    const deadline = Date.now() + 10_000;
    while (ours().length < total && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    const seen = ours();
    const counts = new Map<string, number>();
    for (const p of seen) counts.set(p.id, (counts.get(p.id) ?? 0) + 1);
    const missing: string[] = [];
    for (let f = 0; f < FLOWS; f++)
      for (let n = 0; n < PER_FLOW; n++)
        if (!counts.has(`${tag}-${f}-${n}`)) missing.push(`${tag}-${f}-${n}`);
    const duplicated = [...counts].filter(([, c]) => c > 1).map(([id]) => id);
    expect(missing).toEqual([]);
    expect(duplicated).toEqual([]);
    expect(seen.length).toBe(total);
    // One flow stays on one queue (the kernel hashes the 4-tuple), and flows use several queues.
    const queueOfFlow = new Map<number, Set<number>>();
    for (const p of seen) {
      const qs = queueOfFlow.get(p.sport) ?? new Set<number>();
      qs.add(p.q);
      queueOfFlow.set(p.sport, qs);
    }
    for (const qs of queueOfFlow.values()) expect(qs.size).toBe(1);
    const queuesUsed = new Set(seen.map((p) => p.q));
    expect(queuesUsed.size).toBeGreaterThan(1);
    // The counters agree with what was delivered: every queue that carried our flows counted
    // reads, and every queue that counted reads delivered packets (the kernel's own, such as
    // IPv6 neighbour discovery, may land on a queue none of our flows used).
    const stats: Array<{ packetsRead: number }> = await agent.request("stats");
    const countedQueues = new Set(stats.flatMap((s, q) => (s.packetsRead > 0 ? [q] : [])));
    const deliveredQueues = new Set(agent.packets().map((p) => p.q));
    for (const q of queuesUsed) expect(countedQueues.has(q), `queue ${q} counted`).toBe(true);
    for (const q of countedQueues)
      expect(deliveredQueues.has(q), `queue ${q} delivered`).toBe(true);
  });
});
