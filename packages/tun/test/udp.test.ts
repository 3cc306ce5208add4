/**
 * UdpBatchSocket on real kernel sockets, inside a throw-away namespace (its loopback only):
 * batched receive with correct boundaries and source addresses (IPv4, IPv6), echo through
 * address records, sendBatch, connect, drops, oversize datagrams, SO_REUSEPORT across two
 * worker_threads (no loss, no duplicate, one socket per flow, clean worker exit), bind errors.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import {
  formatAddressRecord,
  UDP_MAX_SEGMENTED_BYTES,
  UDP_MAX_SEGMENTS,
  UdpBatchSocket,
} from "../src/udp.js";
import { type ScenarioReport as Report, runScenarioProgram } from "./scenario.js";

const gate = realDeviceGate();
const SCENARIO = fileURLToPath(new URL("./fixtures/udp-scenario.mjs", import.meta.url));
const NO_CHECK_SOURCE = fileURLToPath(new URL("./fixtures/udp-no-check.c", import.meta.url));

/**
 * Compiles the refusal test's helper (see udp-no-check.c) into `dir`. Without a C compiler
 * the test fails with the reason: the addon itself cannot be built without one either.
 */
function compileNoCheckHelper(dir: string): string {
  const out = join(dir, "udp-no-check");
  try {
    execFileSync("cc", ["-O2", "-Wall", "-o", out, NO_CHECK_SOURCE], { stdio: "pipe" });
  } catch (error) {
    throw new Error(
      `cannot compile ${NO_CHECK_SOURCE} for the UDP_SEGMENT refusal test (a C compiler is needed, as for the addon: apt-get install build-essential): ${(error as Error).message}`,
    );
  }
  return out;
}

/** Runs one scenario of fixtures/udp-scenario.mjs in `ns` and returns its JSON report. */
function runScenario(ns: Netns, name: string, args: Record<string, unknown> = {}): Promise<Report> {
  return runScenarioProgram(
    ns,
    name,
    [process.execPath, SCENARIO, name, JSON.stringify(args)],
    20_000,
  );
}

describe.skipIf(gate.skip)("UdpBatchSocket (real sockets in a namespace)", () => {
  let ns: Netns;

  beforeAll(() => {
    ns = new Netns("fttud");
    ns.exec("ip", ["link", "set", "lo", "up"]);
    for (const a of ["fd00:208::1/128", "fd00:208::2/128"])
      ns.exec("ip", ["-6", "addr", "add", a, "dev", "lo", "nodad"]);
  });
  afterAll(() => cleanupAll());

  for (const family of [4, 6] as const) {
    it(`IPv${family}: batches carry exact boundaries and sources; echo, sendBatch, connect`, async () => {
      const r = await runScenario(ns, "basic", { family });
      const addr = family === 6 ? "::1" : "127.0.0.1";
      expect(r.local).toMatchObject({ address: addr, family });
      expect(r.received.map((d: Report) => d.text)).toEqual(r.sent);
      for (const d of r.received) {
        expect(d).toMatchObject({ address: addr, port: r.peerPort, family });
      }
      // One peer, one key; exact for IPv4.
      expect(new Set(r.received.map((d: Report) => d.key)).size).toBe(1);
      if (family === 4) expect(r.received[0].key).toBe(0x7f000001 * 65536 + r.peerPort);
      expect(r.maxBatch).toBeGreaterThan(1); // 40 back-to-back datagrams batch up
      expect(r.maxBatch).toBeLessThanOrEqual(8);
      expect(r.echoOk).toBe(40);
      expect(r.echoes.slice(0, 40)).toEqual(r.sent);
      expect(r.batchSent).toBe(3);
      expect(r.textSent).toBe(true);
      expect(r.connSent).toBe(true);
      expect(r.echoes.slice(40).sort()).toEqual(
        ["batch-a", "batch-bb", "batch-ccc", "by-text", "connected"].sort(),
      );
      expect(r.stats).toMatchObject({ datagramsIn: 40, datagramsOut: 44, sendDrops: 0 });
      expect(r.stats.receiveBatches).toBe(r.batches);
      expect(r.stats.bytesIn).toBe(r.sent.reduce((n: number, s: string) => n + s.length, 0));
      expect(r.sendAfterClose).toBe(false);
      expect(r.statsAfterClose.sendDrops).toBe(1);
      expect(r.fd).toBe(-1);
    });
  }

  const pktinfoCases = {
    4: [{ family: 4, bind: "127.0.0.1", to: "127.0.0.2", text: "v4-to-B" }],
    6: [
      { family: 6, bind: "fd00:208::1", to: "fd00:208::2", text: "v6-to-B" },
      { family: 4, bind: "127.0.0.1", to: "127.0.0.2", text: "v4-to-dual-stack" },
    ],
  } as const;
  for (const family of [4, 6] as const) {
    it(`IPv${family} packetInfo: a wildcard socket sees each destination and answers from it`, async () => {
      const peers = pktinfoCases[family];
      const r = await runScenario(ns, "pktinfo", { family, peers });
      for (const p of peers) {
        const seen = r.seen.find((d: Report) => d.text === p.text);
        expect(seen).toMatchObject({ to: p.to, toFamily: p.family, toPort: r.port, from: p.bind });
        const reply = (kind: string) =>
          r.replies.find((x: Report) => x.text === `${kind}:${p.text}`);
        expect(reply("single")).toMatchObject({ from: p.to, fromPort: r.port });
        expect(reply("batch")).toMatchObject({ from: p.to, fromPort: r.port });
        // Without a source the kernel answers from the address it prefers (the peer's own,
        // on loopback): so the source argument is what made the difference above.
        expect(reply("default")?.from).toBe(p.bind);
      }
      expect(r.stats.sendDrops).toBe(0);
    });
  }

  const segmentedCases = {
    4: { addr: "127.0.0.1", source: "127.0.0.3" },
    6: { addr: "fd00:208::1", source: "fd00:208::2" },
  } as const;
  for (const family of [4, 6] as const) {
    it(`IPv${family} sendSegmented: one call, separate datagrams of the right sizes (UDP_SEGMENT)`, async () => {
      const { addr, source } = segmentedCases[family];
      const r = await runScenario(ns, "segmented", { family, addr, source });
      const sizes = r.results.map((c: Report) => c.sizes);
      expect(sizes[0]).toEqual([...new Array(9).fill(1000), 700]);
      expect(sizes[1]).toEqual(new Array(UDP_MAX_SEGMENTS).fill(1000));
      expect(sizes[2]).toEqual([...new Array(63).fill(1024), UDP_MAX_SEGMENTED_BYTES - 63 * 1024]);
      expect(sizes[3]).toEqual([800]);
      expect(sizes[4]).toEqual([1000, 1000, 1]);
      for (const c of r.results) {
        expect(c.ok).toBe(true);
        expect(c.exact).toBe(true); // contents and order, datagram by datagram
      }
      expect(r.results[0].from).toEqual([addr]); // the kernel's choice: the receiver's address
      expect(r.results[4].from).toEqual([source]); // the source record (IP_PKTINFO) applies
      const total = r.results.reduce((n: number, c: Report) => n + c.expected, 0);
      const bytes = r.results.reduce((n: number, c: Report) => n + c.length, 0);
      expect(r.stats).toMatchObject({
        datagramsOut: total,
        bytesOut: bytes,
        sendDrops: 10, // the call without a destination: its 10 datagrams
        segmentedSends: 4, // every multi-datagram run, none one by one
        segmentationFallbacks: 0,
      });
      expect(r.offload).toBe(true);
      for (const key of ["tooMany", "tooLong", "zero", "fraction", "outside"])
        expect(r.errors[key]).toMatchObject({ threw: true, code: "ERR_OUT_OF_RANGE" });
      expect(r.errors.noDestination).toEqual({ threw: false, value: false });
      expect(r.afterClose).toBe(false);
      expect(r.statsAfterClose.sendDrops - r.stats.sendDrops).toBe(10); // datagrams, not calls
    });
  }

  it("record indices beyond the arrays (huge, negative, fractional) throw instead of reading past them", async () => {
    const r = await runScenario(ns, "hugeIndices", { addr: "127.0.0.1" });
    expect(r.error).toBeUndefined();
    for (const [index, calls] of Object.entries(r.results as Record<string, Report>)) {
      for (const [call, outcome] of Object.entries(calls)) {
        expect({ index, call, threw: (outcome as Report).threw }).toEqual({
          index,
          call,
          threw: true,
        });
      }
    }
    expect(r.valid).toBe(true);
    expect(r.received).toBe(1); // only the call with the valid index sent anything
  });

  it("sendSegmented: segments above the route MTU fall back for that call; a device without offload still gets GSO", async () => {
    // A local address whose route MTU (1200) is below the segments: GSO refuses (EMSGSIZE),
    // single datagrams go out as IPv4 fragments.
    ns.exec("ip", ["addr", "add", "10.208.0.5/32", "dev", "lo"]);
    ns.exec("ip", [
      "route",
      "replace",
      "local",
      "10.208.0.5",
      "dev",
      "lo",
      "table",
      "local",
      "src",
      "10.208.0.5",
      "mtu",
      "1200",
    ]);
    const tun = { name: "ftud0", local: "10.208.1.1", peer: "10.208.1.2" };
    const r = await runScenario(ns, "segmentedRoutes", { mtuAddr: "10.208.0.5", tun });
    expect(r.afterBig).toMatchObject({ ok: true, received: [1400, 1400, 700], offload: true });
    expect(r.afterBig.stats).toMatchObject({ segmentedSends: 0, segmentationFallbacks: 1 });
    expect(r.afterFits).toMatchObject({ ok: true, received: [1000, 1000, 500], offload: true });
    expect(r.afterFits.stats).toMatchObject({ segmentedSends: 1, segmentationFallbacks: 1 });
    // Into a TUN without checksum offload the kernel segments and checksums in software.
    expect(r.afterTun).toMatchObject({ ok: true, offload: true });
    expect(r.afterTun.seen).toEqual(
      [1000, 1000, 600].map((length) => ({ length, checksumValid: true })),
    );
    expect(r.afterTun.stats).toMatchObject({ segmentedSends: 2, segmentationFallbacks: 1 });
    expect(r.afterTun.stats).toMatchObject({ datagramsOut: 9, sendDrops: 0 });
  });

  it("sendSegmented: when the kernel keeps refusing UDP_SEGMENT, datagrams go one by one and the socket stops trying", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fttud-"));
    try {
      const helper = compileNoCheckHelper(dir);
      const r = await runScenario(ns, "segmentedRefused", { helper });
      expect(r.calls.map((c: Report) => c.received)).toEqual(new Array(4).fill([1000, 1000, 500]));
      expect(r.calls.map((c: Report) => c.ok)).toEqual([true, true, true, true]);
      // Three refusals in a row (EINVAL) switch the socket to one by one for good.
      expect(r.calls.map((c: Report) => c.offload)).toEqual([true, true, false, false]);
      expect(r.stats).toMatchObject({
        datagramsOut: 12,
        sendDrops: 0,
        segmentedSends: 0,
        segmentationFallbacks: 4,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("counts drops (refused, bad batch entry) and oversize datagrams instead of throwing", async () => {
    const r = await runScenario(ns, "drops");
    expect(r.results[0]).toBe(true); // the first send goes out; ICMP then refuses the next
    expect(r.results.filter((ok: boolean) => !ok).length).toBeGreaterThanOrEqual(1);
    expect(r.connStats.sendDrops + r.connStats.datagramsOut).toBe(4);
    expect(r.got).toEqual([100]); // the 500-byte datagram never arrives cut
    expect(r.smallStats.truncated).toBe(1);
    expect(r.batchSent).toBe(2);
    expect(r.smallStats.sendDrops).toBe(1);
  });

  it("reusePort: two worker_threads share a port; each flow on one socket, none lost or duplicated", async () => {
    const flows = 16;
    const perFlow = 20;
    const r = await runScenario(ns, "reuseport", { flows, perFlow });
    expect(r.allExited).toBe(true); // each worker ended by itself after close()
    expect(r.exits).toEqual([0, 0]);
    expect(r.reports).toHaveLength(2);
    const owner = new Map<string, number>();
    const counts = new Map<string, number>();
    for (const rep of r.reports) {
      expect(rep.fd).toBe(-1);
      for (const [port, keys] of Object.entries(rep.seen as Record<string, string[]>)) {
        expect(owner.has(port)).toBe(false); // a flow never shows up on both sockets
        owner.set(port, rep.id);
        for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1);
      }
    }
    expect([...owner.keys()].sort()).toEqual(r.srcPorts.map(String).sort());
    expect(new Set(owner.values()).size).toBe(2); // both sockets got flows
    const missing: string[] = [];
    for (let f = 0; f < flows; f++)
      for (let n = 0; n < perFlow; n++) if (!counts.has(`${f}:${n}`)) missing.push(`${f}:${n}`);
    expect(missing).toEqual([]);
    expect([...counts.values()].every((c) => c === 1)).toBe(true);
    expect(counts.size).toBe(flows * perFlow);
    expect(r.during).toBe(r.before + 2); // the workers' two sockets
    expect(r.after).toBe(r.before); // closed with the workers: no socket left behind
    expect(r.stderr).toBe("");
  });

  it("a terminated worker's socket is closed by env cleanup; exit with a polling socket is clean", async () => {
    const r = await runScenario(ns, "teardown");
    expect(r.during).toBe(r.before + 1);
    expect(r.code).toBe(1); // terminate()'s documented exit code
    expect(r.after).toBe(r.before);
    expect(r.exitCode).toBe(7);
    expect(r.stderr).toBe("");
  });

  it("bind errors carry the errno code and say what is wrong", async () => {
    const r = await runScenario(ns, "errors");
    expect(r.inUse).toMatchObject({ ok: false, code: "EADDRINUSE" });
    expect(r.inUse.message).toContain(`UDP port ${r.port} is already in use`);
    expect(r.notAvail).toMatchObject({ ok: false, code: "EADDRNOTAVAIL" });
    expect(r.notAvail.message).toContain("192.0.2.1 is not assigned");
    expect(r.badFamily).toMatchObject({ ok: false, code: "EINVAL" });
    expect(r.both.ok).toBe(true);
    expect(r.oneSided).toMatchObject({ ok: false, code: "EADDRINUSE" });
    expect(r.fdsAfter).toBe(r.fdsBefore + 1); // failed binds leave no fd (+1: the shared socket)
  });
});

describe("address records", () => {
  it("encode and format IPv4, IPv6 and v4-mapped addresses", () => {
    const v4 = UdpBatchSocket.encodeAddress("10.1.2.3", 4000);
    expect(v4[18]).toBe(4);
    expect(formatAddressRecord(v4)).toBe("10.1.2.3");
    expect(new DataView(v4.buffer).getFloat64(24, true)).toBe(0x0a010203 * 65536 + 4000);
    const v6 = UdpBatchSocket.encodeAddress("fd00::12:0:0:1", 53);
    expect(v6[18]).toBe(6);
    expect(formatAddressRecord(v6)).toBe("fd00::12:0:0:1"); // RFC 5952: first of equal runs
    expect(formatAddressRecord(UdpBatchSocket.encodeAddress("::ffff:1.2.3.4", 1))).toBe("1.2.3.4");
    expect(() => UdpBatchSocket.encodeAddress("nope", 1)).toThrow(/not an IP address/);
  });
});
