/**
 * Checksum offload (IFF_VNET_HDR + TUN_F_CSUM): a TCP SYN whose checksum field holds only
 * the pseudo-header seed, written with partialChecksum, is completed by the kernel and
 * answered by a real listener. The same SYN without the offload flag is dropped, which shows
 * the kernel really checks.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { Agent } from "./agent.js";
import { addrHex, type ParsedPacket, parsePacket, tcpSyn, udpPacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.204.0.1", peer: "10.204.0.2" };
const V6 = { local: "fd00:204::1", peer: "fd00:204::2" };

function isSynAck(p: ParsedPacket | null, dport: number): boolean {
  return p !== null && p.proto === 6 && p.dport === dport && (p.l4[13] & 0x12) === 0x12;
}

describe.skipIf(gate.skip)("vnetHdr checksum offload (real device in a namespace)", () => {
  let ns: Netns;
  let agent: Agent;

  beforeAll(async () => {
    ns = new Netns("fttck");
    ({ agent } = await Agent.start(ns, { name: "ftck0", vnetHdr: true, ipv4: V4, ipv6: V6 }));
    await agent.request("tcpListen", { addr: V4.local, port: 7100 });
    await agent.request("tcpListen", { addr: V6.local, port: 7100 });
  });
  afterAll(async () => {
    await agent?.close().catch(() => {});
    cleanupAll();
  });

  for (const [family, addrs] of [
    [4, V4],
    [6, V6],
  ] as const) {
    it(`IPv${family}: a seed-only SYN with partialChecksum gets a SYN-ACK; without it, none`, async () => {
      const dropped = 42000 + family * 10;
      const answered = dropped + 1;
      const bad = tcpSyn(addrs.peer, dropped, addrs.local, 7100, 1000, true);
      expect(await agent.request("write", { hex: bad.toString("hex"), partial: false })).toBe(true);
      const good = tcpSyn(addrs.peer, answered, addrs.local, 7100, 5000, true);
      expect(await agent.request("write", { hex: good.toString("hex"), partial: true })).toBe(true);

      const event = await agent.waitFor(
        (e) => e.ev === "pkt" && isSynAck(parsePacket(Buffer.from(e.hex, "hex")), answered),
        5_000,
        "SYN-ACK",
      );
      const p = parsePacket(Buffer.from(event.hex, "hex"))!;
      expect(p.version).toBe(family);
      expect(p.src).toBe(addrHex(addrs.local));
      expect(p.sport).toBe(7100);
      expect(p.l4.readUInt32BE(8)).toBe(5001); // acknowledges our ISN + 1
      // The SYN-ACK for the good SYN arrived after the bad one was processed: no answer to it.
      await new Promise((r) => setTimeout(r, 200));
      const answeredBad = agent.packets().some(({ data }) => isSynAck(parsePacket(data), dropped));
      expect(answeredBad).toBe(false);
    });
  }

  it("drops (false, counted) a partial-checksum write that is not TCP/UDP", async () => {
    const [before] = await agent.request("stats");
    const icmpish = udpPacket(V4.peer, 1, V4.local, 2, Buffer.from("x"));
    icmpish[9] = 1; // protocol ICMP: no checksum position the kernel could use
    expect(await agent.request("write", { hex: icmpish.toString("hex"), partial: true })).toBe(
      false,
    );
    const [after] = await agent.request("stats");
    expect(after.writeDrops).toBe(before.writeDrops + 1);
  });

  it("reads packets past the virtio header (offsets point at the IP header)", () => {
    for (const { data } of agent.packets()) expect([4, 6]).toContain(data[0] >> 4);
    expect(agent.packets().length).toBeGreaterThan(0);
  });
});
