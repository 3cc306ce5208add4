/**
 * The rig itself, without the tunnel programs: the topology routes and NATs as designed,
 * R's WAN passes only TCP in tunnel mode, and the measuring helpers report real counts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { ADDR } from "../src/addresses.js";
import { countPcap } from "../src/capture.js";
import { destroyAllNamespaces } from "../src/namespace.js";
import { Rig } from "../src/rig.js";

const gate = realDeviceGate();

describe("pcap counting", () => {
  it("counts frames by protocol and stops at a truncated record", () => {
    const header = Buffer.alloc(24);
    header.writeUInt32LE(0xa1b2c3d4, 0);
    const frame = (etherType: number, proto: number) => {
      const f = Buffer.alloc(14 + 20);
      f.writeUInt16BE(etherType, 12);
      f[14 + 9] = proto;
      const rec = Buffer.alloc(16);
      rec.writeUInt32LE(f.length, 8);
      rec.writeUInt32LE(f.length, 12);
      return Buffer.concat([rec, f]);
    };
    const file = Buffer.concat([
      header,
      frame(0x0800, 6),
      frame(0x0800, 6),
      frame(0x0800, 17),
      frame(0x0800, 1),
      frame(0x0806, 0),
      frame(0x86dd, 58),
      frame(0x0800, 6).subarray(0, 20),
    ]);
    expect(countPcap(file)).toMatchObject({ tcp: 2, udp: 1, icmp: 1, arp: 1, other: 1, total: 6 });
  });
});

describe.skipIf(gate.skip)("rig topology", () => {
  afterAll(() => destroyAllNamespaces());

  describe("direct mode", () => {
    let rig: Rig;
    beforeAll(async () => {
      rig = await Rig.create({ mode: "direct" });
      await rig.startEcho();
    });
    afterAll(async () => rig?.destroy());

    it("A reaches B's UDP echo through R, masqueraded as R's WAN address", async () => {
      const cap = await rig.captureWan();
      const echo = await rig.udpEcho({ sockets: 3, count: 5 });
      const counts = await cap.stop();
      expect(echo.totalReceived).toBe(15);
      expect(echo.sockets.every((s) => s.mismatched === 0)).toBe(true);
      expect(counts.udp).toBeGreaterThanOrEqual(30);
      const flows = rig
        .routerConntrack()
        .filter((e) => e.proto === "udp" && e.dport === rig.appPort);
      expect(flows.length).toBe(3);
      expect(flows[0].raw).toContain(`dst=${ADDR.routerWan}`);
    });

    it("iperf3 measures UDP both ways", async () => {
      const fwd = await rig.iperf({ bitrate: 20e6, seconds: 1 });
      const rev = await rig.iperf({ bitrate: 20e6, seconds: 1, reverse: true });
      expect(fwd.direction).toBe("forward");
      expect(rev.direction).toBe("reverse");
      for (const r of [fwd, rev]) {
        // 20 Mbit/s of 1460-byte datagrams for 1 s is about 1700 datagrams offered: a real
        // count, never more. How many a loaded machine gets out in that second is no
        // test's business, so the lower bound only rules out an empty run.
        expect(r.packets).toBeGreaterThan(100);
        expect(r.packets).toBeLessThan(2_000);
        expect(r.lostPercent).toBeCloseTo((100 * r.lostPackets) / r.packets, 3);
        expect(r.receivedBitsPerSecond).toBeGreaterThan(0);
      }
    });
  });

  describe("tunnel mode without the programs", () => {
    let rig: Rig;
    beforeAll(async () => {
      rig = await Rig.create({ mode: "tunnel", startTunnel: false });
      // At a port A does not redirect into the (absent) tunnel.
      await rig.startEcho(rig.appPort + 1);
    });
    afterAll(async () => rig?.destroy());

    it("R drops all UDP on its WAN side, so nothing reaches B and no UDP crosses", async () => {
      const cap = await rig.captureWan();
      // Addressed to B directly (what the tunnel exists to get around).
      const echo = await rig.udpEcho({
        count: 5,
        waitMs: 500,
        target: { host: ADDR.appServer, port: rig.appPort + 1 },
      });
      const counts = await cap.stop();
      expect(echo.totalSent).toBe(5);
      expect(echo.totalReceived).toBe(0);
      expect(counts.udp).toBe(0);
    });

    it("R passes TCP from the LAN to the WAN (what the tunnel rides on)", async () => {
      const listener = rig.b.execAsync(
        "timeout",
        ["5", "socat", "-u", "TCP-LISTEN:7100,reuseaddr", "STDOUT"],
        10_000,
      );
      // Connect only once socat listens (a fixed sleep loses that race on a busy machine).
      const deadline = Date.now() + 5_000;
      while (!rig.b.exec("ss", ["-Htln", "sport = :7100"]).includes("7100")) {
        if (Date.now() > deadline) throw new Error("socat did not listen on :7100 within 5 s");
        await new Promise((r) => setTimeout(r, 20));
      }
      const sent = await rig.a.execAsync(
        "sh",
        ["-c", `echo through-nat | socat -u STDIN TCP:${ADDR.appServer}:7100`],
        10_000,
      );
      expect(sent.code).toBe(0);
      expect((await listener).stdout).toContain("through-nat");
    });
  });
});
