/**
 * eBPF queue steering ("port-sum"): on real multi-queue devices, every packet the kernel sends
 * into the TUN lands on queue ((sport + dport) mod 2^16) % queues, for IPv4 and IPv6; detaching and bad
 * modes behave.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { TunDevice } from "../src/index.js";
import { Agent } from "./agent.js";
import { checksum, parsePacket, udpPacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.207.0.1", peer: "10.207.0.2" };
const V6 = { local: "fd00:207::1", peer: "fd00:207::2" };
const FLOWS = 32;
const PER_FLOW = 5;

/**
 * 32 (sport, dport) pairs whose sums cover every residue of 2, 3 and 4 several times; every
 * other one sums past 2^16 (the kernel keeps the program's result in 16 bits, which changes the
 * queue when the count is not a power of two).
 */
function flows(): { sport: number; dport: number }[] {
  const out: { sport: number; dport: number }[] = [];
  for (let f = 0; f < FLOWS; f++)
    out.push({ sport: (f % 2 === 0 ? 42000 : 60000) + f * 7, dport: 7000 + (f % 5) * 3 });
  return out;
}

/** `packet` (IPv4, 20-byte header) with `words` 4-byte groups of NOP options added. */
function withIpOptions(packet: Buffer, words: number): Buffer {
  const out = Buffer.concat([
    packet.subarray(0, 20),
    Buffer.alloc(4 * words, 1),
    packet.subarray(20),
  ]);
  out[0] = 0x40 | (5 + words);
  out.writeUInt16BE(out.length, 2);
  out.writeUInt16BE(0, 10);
  out.writeUInt16BE(checksum(out.subarray(0, 20 + 4 * words)), 10);
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
  const wrong = seen.filter((p) => p.q !== ((p.sport + p.dport) % 65536) % queues);
  expect(wrong).toEqual([]);
  // Every queue got traffic: the sums above cover every residue.
  expect(new Set(seen.map((p) => p.q)).size).toBe(queues);
}

for (const queues of [2, 3, 4]) {
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

    it(`IPv4: ${FLOWS} flows x ${PER_FLOW} packets each land on ((sport + dport) mod 2^16) % ${queues}`, async () => {
      await checkSteering(agent, queues, 4, `v4q${queues}`);
    });

    it(`IPv6: ${FLOWS} flows x ${PER_FLOW} packets each land on ((sport + dport) mod 2^16) % ${queues}`, async () => {
      await checkSteering(agent, queues, 6, `v6q${queues}`);
    });

    it("IPv4 with options: ports read at IHL * 4 (packets forwarded back out by the kernel)", async () => {
      // The kernel forwards what we write to 10.207.9.9 back into the TUN, options kept: a
      // real kernel -> TUN packet whose header is longer than 20 bytes.
      ns.exec("sh", [
        "-c",
        `echo 1 > /proc/sys/net/ipv4/ip_forward; for f in all default ftst${queues}; do echo 0 > /proc/sys/net/ipv4/conf/$f/rp_filter; echo 0 > /proc/sys/net/ipv4/conf/$f/send_redirects; done`,
      ]);
      ns.exec("ip", ["route", "replace", "10.207.9.0/24", "dev", `ftst${queues}`]);
      const sent: { sport: number; dport: number }[] = [];
      for (let f = 0; f < 16; f++) {
        const sport = 43000 + f * 5; // sums 51000 + 5f: every residue mod 2 and mod 4
        const dport = 8000;
        const words = 1 + (f % 3); // 24-, 28- and 32-byte headers
        for (let n = 0; n < 3; n++) {
          const packet = udpPacket(
            V4.peer,
            sport,
            "10.207.9.9",
            dport,
            Buffer.from(`opt-${f}-${n}`),
          );
          await agent.request("write", { q: 0, hex: withIpOptions(packet, words).toString("hex") });
          sent.push({ sport, dport });
        }
      }
      const forwarded = () =>
        agent.packets().flatMap(({ q, data }) => {
          const p = parsePacket(data);
          if (p?.proto !== 17 || p.dst !== "0acf0909" || (data[0] & 15) === 5) return [];
          return [{ q, sport: p.sport, dport: p.dport }];
        });
      const deadline = Date.now() + 10_000;
      while (forwarded().length < sent.length && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      const seen = forwarded();
      expect(seen.length).toBe(sent.length);
      expect(seen.filter((p) => p.q !== ((p.sport + p.dport) % 65536) % queues)).toEqual([]);
      expect(new Set(seen.map((p) => p.q)).size).toBe(queues);
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

describe.skipIf(gate.skip)("steering without CAP_BPF / CAP_SYS_ADMIN", () => {
  let ns: Netns;
  beforeAll(() => {
    ns = new Netns("fttsd");
  });
  afterAll(() => cleanupAll());

  it("the probe says why, and a steered open fails with EPERM leaving no device", () => {
    const script = fileURLToPath(new URL("./fixtures/steering-denied.mjs", import.meta.url));
    // setpriv drops the two capabilities from the bounding set before exec, so even root's
    // node starts without them (CAP_NET_ADMIN stays: the TUN device itself can be made).
    const caps = "-bpf,-sys_admin";
    const out = ns.exec("setpriv", [
      "--bounding-set",
      caps,
      "--inh-caps",
      caps,
      process.execPath,
      script,
      "ftsd0",
    ]);
    const r = JSON.parse(out.trim().split("\n").pop() ?? "{}");
    const unprivilegedAllowed =
      readFileSync("/proc/sys/kernel/unprivileged_bpf_disabled", "utf8").trim() === "0";
    if (unprivilegedAllowed) {
      // Socket filters are open to everyone on such a kernel: steering must then just work.
      expect(r.probe).toBeNull();
      expect(r.open.ok).toBe(true);
    } else {
      expect(r.probe.code).toBe("EPERM");
      expect(r.probe.message).toMatch(/not permitted: run as root or grant CAP_BPF/);
      expect(r.open).toMatchObject({ ok: false, code: "EPERM" });
      expect(r.open.message).toMatch(/TUN device ftsd0: cannot load the port-sum steering program/);
    }
    expect(r.deviceLeft).toBe(false);
  });
});
