/**
 * TCP segmentation offload on real devices: a super-packet written with writeSegmented on one
 * TUN (vnetHdr) is forwarded by the kernel to a second TUN (no offload), where it must arrive
 * as separate, correctly sized segments with consecutive sequence numbers and valid checksums,
 * for IPv4 and IPv6.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import {
  MAX_SEGMENT_SIZE,
  MAX_SEGMENTED_PAYLOAD_V4,
  MAX_SEGMENTED_PAYLOAD_V6,
} from "../src/queue.js";
import { Agent } from "./agent.js";
import {
  addrHex,
  ipv4HeaderValid,
  parsePacket,
  tcpChecksumValid,
  tcpSuperHeader,
} from "./packets.js";

const gate = realDeviceGate();
const TX = {
  v4: { local: "10.206.0.1", peer: "10.206.0.2" },
  v6: { local: "fd00:206::1", peer: "fd00:206::2" },
};
const RX = {
  v4: { local: "10.207.0.1", peer: "10.207.0.2" },
  v6: { local: "fd00:207::1", peer: "fd00:207::2" },
};
const ACK = 0x10;
const PSH = 0x08;
const FIN = 0x01;

/** A payload whose bytes differ from segment to segment, so misplaced data shows. */
function patterned(length: number, salt: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + salt + (i >> 8)) & 0xff;
  return b;
}

/** Forwarding between the two TUNs of one namespace (no reverse-path filter on the odd routes). */
/** Has the agent's queue write `header` + `payload` as one segmented packet; its result. */
function writeSegmented(
  agent: Agent,
  header: Buffer,
  payload: Buffer,
  segmentSize: number,
): Promise<boolean> {
  return agent.request("segmented", {
    header: header.toString("hex"),
    payload: payload.toString("hex"),
    segmentSize,
  });
}

function enableForwarding(ns: Netns): void {
  ns.exec("sysctl", [
    "-qw",
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv6.conf.all.forwarding=1",
  ]);
}

describe.skipIf(gate.skip)("writeSegmented: TCP GSO through a real TUN (namespace)", () => {
  let ns: Netns;
  let tx: Agent;
  let rx: Agent;
  let txOpen: Record<string, unknown>;
  let rxOpen: Record<string, unknown>;

  beforeAll(async () => {
    ns = new Netns("fttsg");
    ({ agent: tx, open: txOpen } = await Agent.start(ns, {
      name: "ftsg0",
      vnetHdr: true,
      ipv4: TX.v4,
      ipv6: TX.v6,
    }));
    ({ agent: rx, open: rxOpen } = await Agent.start(ns, {
      name: "ftsg1",
      ipv4: RX.v4,
      ipv6: RX.v6,
    }));
    enableForwarding(ns);
  });
  afterAll(async () => {
    await tx?.close().catch(() => {});
    await rx?.close().catch(() => {});
    cleanupAll();
  });

  it("reports segmentationOffload on vnetHdr queues only", () => {
    expect(txOpen).toMatchObject({ checksumOffload: true, segmentationOffload: true });
    expect(rxOpen).toMatchObject({ checksumOffload: false, segmentationOffload: false });
  });

  /** Collects the TCP packets to `dport` that reached the receiving TUN. */
  async function segmentsTo(dport: number, count: number) {
    const match = (hex: string) => {
      const p = parsePacket(Buffer.from(hex, "hex"));
      return p?.proto === 6 && p.dport === dport;
    };
    let seen = 0;
    await rx.waitFor(
      (e) => e.ev === "pkt" && match(e.hex) && ++seen >= count,
      5_000,
      `${count} segments`,
    );
    return rx.packets().filter(({ data }) => match(data.toString("hex")));
  }

  for (const family of [4, 6] as const) {
    const src = family === 4 ? TX.v4.peer : TX.v6.peer;
    const dst = family === 4 ? RX.v4.peer : RX.v6.peer;

    it(`IPv${family}: 10 x 1000 B (last 700 B) arrive as 10 segments with valid checksums`, async () => {
      const dport = 6000 + family;
      const seq = 0xfffff000; // wraps inside the run: sequence arithmetic must be modular
      const payload = patterned(9 * 1000 + 700, family);
      const header = tcpSuperHeader(
        src,
        41000,
        dst,
        dport,
        seq,
        ACK | PSH | FIN,
        payload.length,
        0,
      );
      const [before] = await tx.request("stats");
      expect(await writeSegmented(tx, header, payload, 1000)).toBe(true);
      const [after] = await tx.request("stats");
      expect(after.packetsWritten - before.packetsWritten).toBe(10);
      expect(after.bytesWritten - before.bytesWritten).toBe(10 * header.length + payload.length);
      expect(after.segmentedWrites - before.segmentedWrites).toBe(1);
      expect(after.writeDrops).toBe(before.writeDrops);

      const segments = await segmentsTo(dport, 10);
      expect(segments).toHaveLength(10);
      const ids: number[] = [];
      const pieces: Buffer[] = [];
      segments.forEach(({ data }, i) => {
        const p = parsePacket(data)!;
        const body = p.l4.subarray((p.l4[12] >> 4) * 4);
        expect(p.version).toBe(family);
        expect(p.src).toBe(addrHex(src));
        expect(p.dst).toBe(addrHex(dst));
        expect(data.length).toBe(header.length + (i < 9 ? 1000 : 700));
        expect(body.length).toBe(i < 9 ? 1000 : 700);
        expect(p.l4.readUInt32BE(4)).toBe((seq + i * 1000) >>> 0);
        // FIN and PSH belong to the end of the data: only the last segment keeps them.
        expect(p.l4[13]).toBe(i < 9 ? ACK : ACK | PSH | FIN);
        expect(tcpChecksumValid(data)).toBe(true);
        expect(ipv4HeaderValid(data)).toBe(true);
        if (family === 4) ids.push(data.readUInt16BE(4));
        pieces.push(body);
      });
      expect(Buffer.concat(pieces)).toEqual(payload);
      if (family === 4) {
        // We send ID 0. Linux numbers the segments 0, 1, 2, ... (no SKB_GSO_TCP_FIXEDID from
        // virtio); a kernel that kept the ID fixed would be correct too, as DF is set.
        const consecutive = ids.every((id, i) => id === i);
        const fixed = ids.every((id) => id === 0);
        expect(consecutive || fixed).toBe(true);
      }
    });

    it(`IPv${family}: the largest payload per call (${family === 4 ? MAX_SEGMENTED_PAYLOAD_V4 : MAX_SEGMENTED_PAYLOAD_V6} B) goes through; one byte more throws`, async () => {
      const dport = 6100 + family;
      const max = family === 4 ? MAX_SEGMENTED_PAYLOAD_V4 : MAX_SEGMENTED_PAYLOAD_V6;
      const segmentSize = 1400;
      const expected = Math.ceil(max / segmentSize);
      const payload = patterned(max, 7 + family);
      const header = tcpSuperHeader(src, 41001, dst, dport, 1, ACK, payload.length, 0x1234);
      expect(await writeSegmented(tx, header, payload, segmentSize)).toBe(true);
      const segments = await segmentsTo(dport, expected);
      expect(segments).toHaveLength(expected);
      expect(segments.every(({ data }) => tcpChecksumValid(data))).toBe(true);
      expect(segments.at(-1)!.data.length).toBe(header.length + (max % segmentSize));

      // The length fields cannot even describe one byte more: the payload size alone decides.
      const result = await tx.request("segmentedThrows", {
        header: header.toString("hex"),
        payload: Buffer.alloc(max + 1).toString("hex"),
        segmentSize,
      });
      expect(result).toMatchObject({ threw: true, code: "ERR_OUT_OF_RANGE" });
    });

    it(`IPv${family}: a payload of at most one segment is an ordinary partial-checksum write`, async () => {
      const dport = 6200 + family;
      const payload = patterned(1000, 3);
      const header = tcpSuperHeader(src, 41002, dst, dport, 77, ACK | PSH, payload.length);
      const [before] = await tx.request("stats");
      expect(await writeSegmented(tx, header, payload, 1000)).toBe(true);
      const [after] = await tx.request("stats");
      expect(after.packetsWritten - before.packetsWritten).toBe(1);
      expect(after.segmentedWrites).toBe(before.segmentedWrites);
      const [only] = await segmentsTo(dport, 1);
      expect(only.data.length).toBe(header.length + 1000);
      expect(tcpChecksumValid(only.data)).toBe(true);
      expect(parsePacket(only.data)!.l4.subarray(20)).toEqual(payload);
    });
  }

  it("drops (false, counted) a header that does not describe the payload", async () => {
    const payload = patterned(3000, 1);
    const [before] = await tx.request("stats");
    const cases = [
      tcpSuperHeader(TX.v4.peer, 1, RX.v4.peer, 2, 0, ACK, payload.length - 1), // wrong length
      (() => {
        const h = tcpSuperHeader(TX.v4.peer, 1, RX.v4.peer, 2, 0, ACK, payload.length);
        h[9] = 17; // UDP: not segmentable as TCP
        return h;
      })(),
      tcpSuperHeader(TX.v4.peer, 1, RX.v4.peer, 2, 0, ACK, payload.length).subarray(0, 39),
    ];
    for (const header of cases) expect(await writeSegmented(tx, header, payload, 1000)).toBe(false);
    const [after] = await tx.request("stats");
    expect(after.writeDrops - before.writeDrops).toBe(cases.length);
    expect(after.packetsWritten).toBe(before.packetsWritten);
  });

  it("drops (counted) a packet the kernel cut to the read size instead of delivering it", async () => {
    // The read slots were sized for the MTU at open time (1500); a larger MTU lets a bigger
    // packet in, which TUN cuts silently to the read size.
    const [before] = await rx.request("stats");
    ns.exec("ip", ["link", "set", "ftsg1", "mtu", "4000"]);
    try {
      for (const size of [3000, 100])
        await rx.request("udpSend", {
          family: 4,
          addr: RX.v4.peer,
          port: 6700,
          hex: Buffer.alloc(size, 1).toString("hex"),
        });
      await rx.waitFor(
        (e) => e.ev === "pkt" && parsePacket(Buffer.from(e.hex, "hex"))?.dport === 6700,
        5_000,
        "the small datagram",
      );
    } finally {
      ns.exec("ip", ["link", "set", "ftsg1", "mtu", "1500"]);
    }
    const [after] = await rx.request("stats");
    expect(after.readDrops - before.readDrops).toBe(1);
    const lengths = rx
      .packets()
      .map(({ data }) => parsePacket(data))
      .filter((p) => p?.dport === 6700)
      .map((p) => p!.l4.length);
    expect(lengths).toEqual([108]);
  });

  it("throws for a bad segmentSize and on a queue without vnetHdr", async () => {
    const header = tcpSuperHeader(TX.v4.peer, 1, RX.v4.peer, 2, 0, ACK, 10).toString("hex");
    const payload = Buffer.alloc(10).toString("hex");
    for (const segmentSize of [0, MAX_SEGMENT_SIZE + 1, 1.5])
      expect(await tx.request("segmentedThrows", { header, payload, segmentSize })).toMatchObject({
        threw: true,
        code: "ERR_OUT_OF_RANGE",
      });
    const plain = await rx.request("segmentedThrows", { header, payload, segmentSize: 4 });
    expect(plain).toMatchObject({ threw: true, code: "ERR_TUN_NO_SEGMENTATION_OFFLOAD" });
    expect(plain.message).toMatch(/vnetHdr/);
  });
});

const RXO = {
  v4: { local: "10.209.0.1", peer: "10.209.0.2" },
  v6: { local: "fd00:209::1", peer: "fd00:209::2" },
};
const RXV = {
  v4: { local: "10.209.1.1", peer: "10.209.1.2" },
  v6: { local: "fd00:209:1::1", peer: "fd00:209:1::2" },
};

describe.skipIf(gate.skip)(
  "receiveOffload: coalesced TCP from the kernel (real TUNs, namespace)",
  () => {
    let ns: Netns;
    let tx: Agent;
    let rxo: Agent;
    let rxv: Agent;
    let rxoOpen: Record<string, unknown>;
    let rxvOpen: Record<string, unknown>;

    beforeAll(async () => {
      ns = new Netns("fttro");
      ({ agent: tx } = await Agent.start(ns, {
        name: "ftro0",
        vnetHdr: true,
        ipv4: TX.v4,
        ipv6: TX.v6,
      }));
      // Same mode apart from receiveOffload: the difference in what arrives is that option's.
      ({ agent: rxo, open: rxoOpen } = await Agent.start(ns, {
        name: "ftro1",
        vnetHdr: true,
        receiveOffload: true,
        multiQueue: true,
        batchSize: 8,
        ipv4: RXO.v4,
        ipv6: RXO.v6,
      }));
      ({ agent: rxv, open: rxvOpen } = await Agent.start(ns, {
        name: "ftro2",
        vnetHdr: true,
        multiQueue: true,
        ipv4: RXV.v4,
        ipv6: RXV.v6,
      }));
      enableForwarding(ns);
    });
    afterAll(async () => {
      for (const a of [tx, rxo, rxv]) await a?.close().catch(() => {});
      cleanupAll();
    });

    /** Writes a 10 x 1000 B (last 700 B) super-packet from the tx peer to `dst`:`dport`. */
    async function sendRun(family: 4 | 6, dst: string, dport: number, salt: number) {
      const src = family === 4 ? TX.v4.peer : TX.v6.peer;
      const payload = patterned(9 * 1000 + 700, salt);
      const header = tcpSuperHeader(src, 42000, dst, dport, 5000, ACK | PSH, payload.length);
      const ok = await writeSegmented(tx, header, payload, 1000);
      expect(ok).toBe(true);
      return { header, payload };
    }

    function tcpTo(agent: Agent, dport: number) {
      return agent.events.filter((e) => {
        if (e.ev !== "pkt") return false;
        const p = parsePacket(Buffer.from(e.hex, "hex"));
        return p?.proto === 6 && p.dport === dport;
      });
    }

    it("opens with receiveOffload only on the device that asked", () => {
      expect(rxoOpen).toMatchObject({ checksumOffload: true, receiveOffload: true });
      expect(rxvOpen).toMatchObject({ checksumOffload: true, receiveOffload: false });
    });

    for (const family of [4, 6] as const) {
      it(`IPv${family}: a forwarded 10-segment run arrives as one packet with segmentSizes = 1000`, async () => {
        const dport = 6300 + family;
        const dst = family === 4 ? RXO.v4.peer : RXO.v6.peer;
        const [before] = await rxo.request("stats");
        const { header, payload } = await sendRun(family, dst, dport, 11 + family);
        await rxo.waitFor((e) => tcpTo(rxo, dport).includes(e), 5_000, "coalesced packet");
        await new Promise((r) => setTimeout(r, 100)); // any stray segments would show up now
        const got = tcpTo(rxo, dport);
        expect(got).toHaveLength(1);
        expect(got[0].gso).toBe(1000);
        const data = Buffer.from(got[0].hex, "hex");
        expect(data.length).toBe(header.length + payload.length);
        const ipLength = family === 4 ? data.readUInt16BE(2) : 40 + data.readUInt16BE(4);
        expect(ipLength).toBe(data.length);
        const p = parsePacket(data)!;
        expect(p.l4.readUInt32BE(4)).toBe(5000);
        expect(p.l4.subarray(20)).toEqual(payload);
        const [after] = await rxo.request("stats");
        expect(after.coalescedReads - before.coalescedReads).toBe(1);
        expect(after.readDrops).toBe(before.readDrops);
      });

      it(`IPv${family}: without receiveOffload the same run arrives as 10 segments`, async () => {
        const dport = 6400 + family;
        const dst = family === 4 ? RXV.v4.peer : RXV.v6.peer;
        await sendRun(family, dst, dport, 21 + family);
        let seen = 0;
        await rxv.waitFor(
          (e) => tcpTo(rxv, dport).includes(e) && ++seen >= 10,
          5_000,
          "10 segments",
        );
        const got = tcpTo(rxv, dport);
        expect(got).toHaveLength(10);
        expect(got.every((e) => e.gso === undefined)).toBe(true);
        expect(got.map((e) => parsePacket(Buffer.from(e.hex, "hex"))!.l4.length - 20)).toEqual([
          ...new Array(9).fill(1000),
          700,
        ]);
      });
    }

    it("delivers near-64 KiB coalesced packets and plain ones back to back, intact and in order", async () => {
      // The read buffer holds batchSize (8) MTU slots plus one 64 KiB read: a batch must end
      // before a read could overrun it, whatever mix of sizes arrives.
      const dport = 6500;
      const sent: { payload: Buffer; gso: number | undefined }[] = [];
      for (let k = 0; k < 6; k++) {
        const big = k % 2 === 0;
        const payload = patterned(big ? 40 * 1400 : 900, 40 + k);
        const header = tcpSuperHeader(
          TX.v4.peer,
          42001,
          RXO.v4.peer,
          dport,
          k,
          ACK,
          payload.length,
        );
        expect(await writeSegmented(tx, header, payload, 1400)).toBe(true);
        sent.push({ payload, gso: big ? 1400 : undefined });
      }
      let seen = 0;
      await rxo.waitFor((e) => tcpTo(rxo, dport).includes(e) && ++seen >= 6, 5_000, "6 packets");
      const got = tcpTo(rxo, dport);
      expect(got).toHaveLength(6);
      got.forEach((e, k) => {
        expect(e.gso).toBe(sent[k].gso);
        expect(parsePacket(Buffer.from(e.hex, "hex"))!.l4.subarray(20)).toEqual(sent[k].payload);
      });
    });

    it("attach and fromFd read the device's mode back; a different explicit mode is refused", async () => {
      expect(await rxo.request("attachInfo", {})).toEqual({
        receiveOffload: true,
        checksumOffload: true,
      });
      expect(await rxo.request("attachInfo", { fromFd: true })).toEqual({
        receiveOffload: true,
        checksumOffload: true,
      });
      expect(await rxv.request("attachInfo", {})).toEqual({
        receiveOffload: false,
        checksumOffload: true,
      });
      const refused = await rxo.request("attachInfo", { opts: { receiveOffload: false } });
      expect(refused).toMatchObject({ threw: true, code: "EINVAL" });
      expect(refused.message).toMatch(/receiveOffload/);
      const refusedFd = await rxv.request("attachInfo", {
        fromFd: true,
        opts: { receiveOffload: true },
      });
      expect(refusedFd).toMatchObject({ threw: true, code: "EINVAL" });
      // Attaching re-applied the device's offload flags: coalescing still works afterwards.
      const dport = 6600;
      await sendRun(4, RXO.v4.peer, dport, 60);
      const e = await rxo.waitFor((x) => tcpTo(rxo, dport).includes(x), 5_000, "coalesced packet");
      expect(e.gso).toBe(1000);
    });

    it("refuses receiveOffload without vnetHdr before opening anything", async () => {
      const { TunDevice } = await import("../src/device.js");
      expect(() => TunDevice.open({ receiveOffload: true })).toThrow(
        expect.objectContaining({ code: "EINVAL", message: expect.stringMatching(/vnetHdr/) }),
      );
    });
  },
);
