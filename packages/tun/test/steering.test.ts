/**
 * eBPF queue steering ("port-sum"): on real multi-queue devices, every packet the kernel sends
 * into the TUN lands on queue (sport + dport) % queues, for IPv4 and IPv6; detaching and bad
 * modes behave.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { TunDevice } from "../src/index.js";
import { Agent } from "./agent.js";
import { parsePacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.207.0.1", peer: "10.207.0.2" };
const V6 = { local: "fd00:207::1", peer: "fd00:207::2" };
const FLOWS = 32;
const PER_FLOW = 5;

/** 32 (sport, dport) pairs whose sums cover every residue of 2 and 4 several times. */
function flows(): { sport: number; dport: number }[] {
  const out: { sport: number; dport: number }[] = [];
  for (let f = 0; f < FLOWS; f++) out.push({ sport: 42000 + f * 7, dport: 7000 + (f % 5) * 3 });
  return out;
}

/** Sends every flow from the kernel to the peer and checks each packet's queue. */
async function checkSteering(agent: Agent, queues: number, family: 4 | 6, tag: string) {
  const addr = family === 4 ? V4.peer : V6.peer;
  for (const { sport, dport } of flows()) {
    await agent.request("udpSend", {
      family,
      addr,
      port: dport,
      srcPort: sport,
      count: PER_FLOW,
      seq: true,
      hex: Buffer.from(`${tag}-`).toString("hex"),
    });
  }
  const ours = () =>
    agent.packets().flatMap(({ q, data }) => {
      const p = parsePacket(data);
      if (p?.proto !== 17 || p.version !== family) return [];
      const body = p.l4.subarray(8).toString();
      return body.startsWith(`${tag}-`) ? [{ q, sport: p.sport, dport: p.dport, body }] : [];
    });
  const total = FLOWS * PER_FLOW;
  const deadline = Date.now() + 10_000;
  while (ours().length < total && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 20));
  const seen = ours();
  expect(seen.length).toBe(total);
  const wrong = seen.filter((p) => p.q !== (p.sport + p.dport) % queues);
  expect(wrong).toEqual([]);
  // Every queue got traffic: the sums above cover every residue.
  expect(new Set(seen.map((p) => p.q)).size).toBe(queues);
}

for (const queues of [2, 4]) {
  describe.skipIf(gate.skip)(`port-sum steering on ${queues} queues (real device)`, () => {
    let ns: Netns;
    let agent: Agent;

    beforeAll(async () => {
      ns = new Netns("fttst");
      ({ agent } = await Agent.start(ns, {
        name: `ftst${queues}`,
        queues,
        ipv4: V4,
        ipv6: V6,
        steering: "port-sum",
        batchSize: 16,
      }));
    });
    afterAll(async () => {
      await agent?.close().catch(() => {});
      cleanupAll();
    });

    it(`IPv4: ${FLOWS} flows x ${PER_FLOW} packets each land on (sport + dport) % ${queues}`, async () => {
      await checkSteering(agent, queues, 4, `v4q${queues}`);
    });

    it(`IPv6: ${FLOWS} flows x ${PER_FLOW} packets each land on (sport + dport) % ${queues}`, async () => {
      await checkSteering(agent, queues, 6, `v6q${queues}`);
    });

    it("can be detached (back to the kernel's hash) and attached again", async () => {
      await agent.request("setSteering", { mode: null });
      await agent.request("setSteering", { mode: "port-sum" });
      await checkSteering(agent, queues, 4, `again${queues}`);
    });
  });
}

describe.skipIf(gate.skip)("steering API", () => {
  it("reports steering as supported here (root, kernel >= 4.16)", () => {
    expect(TunDevice.steeringUnavailableReason()).toBeNull();
  });

  it("rejects an unknown mode before opening anything", () => {
    expect(() => TunDevice.open({ queues: 2, steering: "round-robin" as "port-sum" })).toThrow(
      /bad steering mode "round-robin"/,
    );
  });
});
