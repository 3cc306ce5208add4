/**
 * Real TUN device in a private namespace: packets from the kernel arrive in batches, packets
 * written (flat, gathered, batched) reach kernel sockets, for IPv4 and IPv6.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { Agent } from "./agent.js";
import { addrHex, echoRequest, parsePacket, udpPacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.201.0.1", peer: "10.201.0.2" };
const V6 = { local: "fd00:201::1", peer: "fd00:201::2" };

describe.skipIf(gate.skip)("TUN read and write (real device in a namespace)", () => {
  let ns: Netns;
  let agent: Agent;
  let open: Record<string, unknown>;

  beforeAll(async () => {
    ns = new Netns("fttrw");
    ({ agent, open } = await Agent.start(ns, { name: "ftrw0", ipv4: V4, ipv6: V6, mtu: 1400 }));
  });
  afterAll(async () => {
    await agent?.close().catch(() => {});
    cleanupAll();
  });

  it("opens the device with the requested name and MTU", () => {
    expect(open).toMatchObject({ name: "ftrw0", mtu: 1400, queues: 1, checksumOffload: false });
    const link = ns.exec("ip", ["-o", "link", "show", "ftrw0"]);
    expect(link).toMatch(/mtu 1400/);
    expect(link).toMatch(/qlen 10000/);
    expect(ns.exec("ip", ["-o", "addr", "show", "ftrw0"])).toMatch(
      /inet 10\.201\.0\.1 peer 10\.201\.0\.2\/32/,
    );
  });

  for (const [family, addrs] of [
    [4, V4],
    [6, V6],
  ] as const) {
    it(`kernel -> TUN: a UDP datagram to the IPv${family} peer arrives intact`, async () => {
      const payload = Buffer.from(`hello over udp${family}`);
      await agent.request("udpSend", {
        family,
        addr: addrs.peer,
        port: 5000 + family,
        srcPort: 4000 + family,
        hex: payload.toString("hex"),
      });
      const match = (data: Buffer) => {
        const p = parsePacket(data);
        return p?.proto === 17 && p.dport === 5000 + family ? p : null;
      };
      await agent.waitFor(
        (e) => e.ev === "pkt" && match(Buffer.from(e.hex, "hex")) !== null,
        5_000,
        `UDP/IPv${family} packet`,
      );
      const p = agent
        .packets()
        .map((x) => match(x.data))
        .find((x) => x !== null)!;
      expect(p.version).toBe(family);
      expect(p.src).toBe(addrHex(addrs.local));
      expect(p.dst).toBe(addrHex(addrs.peer));
      expect(p.sport).toBe(4000 + family);
      expect(p.l4.subarray(8)).toEqual(payload);
    });

    it(`kernel -> TUN: the kernel's ICMP echo reply to the IPv${family} peer arrives`, async () => {
      const data = Buffer.from(`ping${family}-payload`);
      const request = echoRequest(addrs.peer, addrs.local, 0x4242, family, data);
      expect(await agent.request("write", { hex: request.toString("hex") })).toBe(true);
      const replyType = family === 4 ? 0 : 129;
      const isReply = (hex: string) => {
        const p = parsePacket(Buffer.from(hex, "hex"));
        return (
          p !== null &&
          p.proto === (family === 4 ? 1 : 58) &&
          p.l4[0] === replyType &&
          p.l4.readUInt16BE(6) === family
        );
      };
      const event = await agent.waitFor(
        (e) => e.ev === "pkt" && isReply(e.hex),
        5_000,
        `ICMPv${family} echo reply`,
      );
      const p = parsePacket(Buffer.from(event.hex, "hex"))!;
      expect(p.src).toBe(addrHex(addrs.local));
      expect(p.dst).toBe(addrHex(addrs.peer));
      expect(p.l4.readUInt16BE(4)).toBe(0x4242);
      expect(p.l4.subarray(8)).toEqual(data);
    });

    it(`TUN -> kernel: IPv${family} UDP written flat, gathered and batched reaches a socket`, async () => {
      const port = 6000 + family;
      await agent.request("udpBind", { family, addr: addrs.local, port });
      const flat = udpPacket(addrs.peer, 4444, addrs.local, port, Buffer.from(`flat-${family}`));
      const gathered = udpPacket(
        addrs.peer,
        4444,
        addrs.local,
        port,
        Buffer.from(`gath-${family}`),
      );
      const headerLen = family === 4 ? 28 : 48;
      expect(await agent.request("write", { hex: flat.toString("hex") })).toBe(true);
      expect(
        await agent.request("gather", {
          header: gathered.subarray(0, headerLen).toString("hex"),
          payload: gathered.subarray(headerLen).toString("hex"),
        }),
      ).toBe(true);
      const batch = [1, 2, 3].map((i) =>
        udpPacket(
          addrs.peer,
          4444,
          addrs.local,
          port,
          Buffer.from(`batch-${family}-${i}`),
        ).toString("hex"),
      );
      expect(await agent.request("batch", { packets: batch })).toBe(3);
      const texts = [
        `flat-${family}`,
        `gath-${family}`,
        ...[1, 2, 3].map((i) => `batch-${family}-${i}`),
      ];
      for (const text of texts) {
        const hex = Buffer.from(text).toString("hex");
        const got = await agent.waitFor(
          (e) => e.ev === "udp" && e.port === port && e.hex === hex,
          5_000,
          `datagram ${text}`,
        );
        expect(got.fromPort).toBe(4444);
        expect(got.from).toBe(addrs.peer);
      }
    });
  }

  it("TunQueue.fromFd wraps a duplicate of an existing queue fd", async () => {
    await agent.request("udpBind", { family: 4, addr: V4.local, port: 6010 });
    const packet = udpPacket(V4.peer, 4545, V4.local, 6010, Buffer.from("via-fromFd"));
    const r = await agent.request("fromFdWrite", { hex: packet.toString("hex") });
    expect(r).toMatchObject({
      name: "ftrw0",
      mtu: 1400,
      offload: false,
      ok: true,
      fdAfterClose: -1,
    });
    expect(r.tunFds).toBe(1); // the duplicate is closed, the original still open
    await agent.waitFor(
      (e) => e.ev === "udp" && e.hex === Buffer.from("via-fromFd").toString("hex"),
      5_000,
      "datagram written through fromFd",
    );
    expect(await agent.request("write", { hex: packet.toString("hex") })).toBe(true);
  });

  it("counts reads, writes and batches; a malformed write is a drop, not an exception", async () => {
    expect(await agent.request("write", { hex: "00" })).toBe(false);
    const [stats] = await agent.request("stats");
    expect(stats.packetsRead).toBeGreaterThanOrEqual(4);
    expect(stats.readBatches).toBeGreaterThanOrEqual(1);
    expect(stats.readBatches).toBeLessThanOrEqual(stats.packetsRead);
    expect(stats.packetsWritten).toBeGreaterThanOrEqual(12);
    expect(stats.writeDrops).toBeGreaterThanOrEqual(1);
  });

  it("refuses partialChecksum without vnetHdr with a clear error", async () => {
    const r = await agent.request("writeThrows", { hex: "4500" });
    expect(r).toMatchObject({ threw: true, code: "ERR_TUN_NO_CHECKSUM_OFFLOAD" });
    expect(r.message).toMatch(/vnetHdr/);
  });

  it("closing the device removes it and releases every fd", async () => {
    const bye = await agent.close();
    expect(bye?.fds.tun).toBe(0);
    expect(() => ns.exec("ip", ["link", "show", "ftrw0"])).toThrow();
  });
});
