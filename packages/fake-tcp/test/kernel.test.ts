/**
 * The Linux kernel as a real peer, over a real TUN in a throw-away namespace: handshakes with
 * a kernel listener (IPv4 and IPv6, with and without checksum offload), refusal of a kernel
 * client, and no checksum/length errors in the namespace's SNMP counters.
 */
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate, uniqueName } from "../../../test-support/netns.js";

const gate = realDeviceGate();
const FIXTURE = fileURLToPath(new URL("./fixtures/kernel-peer.mjs", import.meta.url));
const ADDR = {
  4: { kernel: "10.77.0.1", stack: "10.77.0.2" },
  6: { kernel: "fd77::1", stack: "fd77::2" },
} as const;

/** Collects a child's stdout lines; `waitFor` resolves on the first line matching. */
function lines(child: ChildProcess) {
  const seen: string[] = [];
  const waiters: Array<() => void> = [];
  let buf = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    let i = buf.indexOf("\n");
    while (i >= 0) {
      seen.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      i = buf.indexOf("\n");
    }
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const waitFor = async (pred: (l: string) => boolean, ms = 10_000): Promise<string> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = seen.find(pred);
      if (hit !== undefined) return hit;
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`no matching line; stdout: ${seen.join("|")} stderr: ${stderr}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  };
  return { seen, waitFor, exited, stderr: () => stderr };
}

/** Error counters that must not move when the kernel receives our packets. */
function errorCounters(ns: Netns): Record<string, number> {
  const out: Record<string, number> = {};
  const snmp = ns.exec("cat", ["/proc/net/snmp"]).trim().split("\n");
  for (let i = 0; i + 1 < snmp.length; i += 2) {
    const names = snmp[i].split(/\s+/);
    const values = snmp[i + 1].split(/\s+/);
    const proto = names[0].replace(":", "");
    names.forEach((n, k) => {
      if (k > 0) out[`${proto}.${n}`] = Number(values[k]);
    });
  }
  for (const line of ns.exec("cat", ["/proc/net/snmp6"]).trim().split("\n")) {
    const [n, v] = line.split(/\s+/);
    out[n] = Number(v);
  }
  const keys = [
    "Ip.InHdrErrors",
    "Ip.InAddrErrors",
    "Ip.InDiscards",
    "Tcp.InErrs",
    "Tcp.InCsumErrors",
    "Ip6InHdrErrors",
    "Ip6InTruncatedPkts",
    "Ip6InDiscards",
    "Tcp.InSegs",
  ];
  return Object.fromEntries(keys.map((k) => [k, out[k] ?? Number.NaN]));
}

const KERNEL_LISTENER = `
const net = require("net");
const srv = net.createServer((s) => {
  s.on("data", (d) => process.stdout.write("D" + d.toString("hex") + "\\n"));
  s.on("error", (e) => process.stdout.write("E" + e.code + "\\n"));
  s.on("close", () => process.stdout.write("C\\n"));
});
srv.listen(Number(process.argv[1]), "::", () => process.stdout.write("L\\n"));
setTimeout(() => process.exit(0), 20000);
`;

describe.skipIf(gate.skip)("the Linux kernel as a peer over a real TUN", () => {
  afterAll(() => cleanupAll());

  for (const family of [4, 6] as const)
    for (const vnetHdr of [false, true])
      it(`IPv${family}${vnetHdr ? " + checksum offload" : ""}: connect() to a kernel listener, bytes arrive intact, no kernel errors`, async () => {
        const ns = new Netns("ftk");
        try {
          const port = 5000 + Math.floor(Math.random() * 1000);
          const listener = lines(ns.spawn(process.execPath, ["-e", KERNEL_LISTENER, String(port)]));
          await listener.waitFor((l) => l === "L");
          const datagrams = [
            Buffer.from("first datagram"),
            Buffer.alloc(1400, 0xab),
            Buffer.from([0]),
            Buffer.alloc(333, 7),
            Buffer.alloc(family === 6 ? 1440 : 1460, 0x5a), // fills the 1500-byte MTU exactly
            // A burst of equal datagrams and a shorter one: with a virtio header, one
            // segmented write that the kernel must cut into exactly these segments.
            ...Array.from({ length: 20 }, (_, i) => Buffer.alloc(1000, i)),
            Buffer.alloc(999, 0xee),
          ];
          const before = errorCounters(ns);
          const fixture = lines(
            ns.spawn(process.execPath, [
              FIXTURE,
              JSON.stringify({
                mode: "connect",
                tun: uniqueName("ftk"),
                vnetHdr,
                family,
                kernelAddr: ADDR[family].kernel,
                stackAddr: ADDR[family].stack,
                port,
                datagrams: datagrams.map((d) => d.toString("hex")),
              }),
            ]),
          );
          const done = JSON.parse(await fixture.waitFor((l) => l.includes('"done"'), 15_000));
          expect(done.error).toBeUndefined();
          expect(done.sent).toBe(datagrams.length);
          // The kernel took our SYN with its experimental option and did not echo it.
          expect(done.peerIsOurs).toBe(false);
          await listener.waitFor((l) => l.startsWith("E") || l === "C");
          const received = Buffer.concat(
            listener.seen
              .filter((l) => l.startsWith("D"))
              .map((l) => Buffer.from(l.slice(1), "hex")),
          );
          expect(received.equals(Buffer.concat(datagrams))).toBe(true);
          const after = errorCounters(ns);
          for (const k of Object.keys(before))
            if (k !== "Tcp.InSegs") expect(`${k}=${after[k]}`).toBe(`${k}=${before[k]}`);
          // The kernel did take in our segments (handshake ACK + the data + RST at least).
          // (A coalesced run counts once: the kernel takes the offloaded packet in whole.)
          expect(after["Tcp.InSegs"] - before["Tcp.InSegs"]).toBeGreaterThanOrEqual(7);
          // With a virtio header the burst went out coalesced (segmentation offload).
          expect(done.queue.segmentedWrites > 0).toBe(vnetHdr);
        } finally {
          ns.destroy();
        }
      });

  for (const family of [4, 6] as const)
    it(`IPv${family}: a kernel client (random ISN) is refused by our RST (ECONNREFUSED)`, async () => {
      const ns = new Netns("ftk");
      try {
        const port = 6000 + Math.floor(Math.random() * 1000);
        const child = ns.spawn(
          process.execPath,
          [
            FIXTURE,
            JSON.stringify({
              mode: "listen",
              tun: uniqueName("ftk"),
              vnetHdr: false,
              family,
              kernelAddr: ADDR[family].kernel,
              stackAddr: ADDR[family].stack,
              port,
            }),
          ],
          { stdio: ["pipe", "pipe", "pipe"] },
        );
        const fixture = lines(child);
        await fixture.waitFor((l) => l.includes('"ready"'));
        const before = errorCounters(ns);
        const client = lines(
          ns.spawn(process.execPath, [
            "-e",
            `require("net").connect(${port}, "${ADDR[family].stack}").on("connect", () => { console.log("CONNECTED"); process.exit(0); }).on("error", (e) => { console.log("E" + e.code); process.exit(0); });`,
          ]),
        );
        expect(await client.waitFor((l) => l.startsWith("E") || l === "CONNECTED")).toBe(
          "EECONNREFUSED",
        );
        child.stdin!.write("stop\n");
        const done = JSON.parse(await fixture.waitFor((l) => l.includes('"done"')));
        expect(done.stats.rstSent).toBeGreaterThanOrEqual(1);
        expect(done.stats.connections).toBe(0);
        const after = errorCounters(ns);
        for (const k of Object.keys(before))
          if (k !== "Tcp.InSegs") expect(`${k}=${after[k]}`).toBe(`${k}=${before[k]}`);
      } finally {
        ns.destroy();
      }
    });
});
