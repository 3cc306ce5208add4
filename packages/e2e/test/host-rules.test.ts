/**
 * What the programs' host rules and settings do, in the namespace rig (client C behind the NAT
 * router R, server S):
 *
 * - A forged RST that S's conntrack would have taken (at the expected sequence number, with a
 *   TTL that runs out at S, so the stack never sees it) does not end the connection, even
 *   after a pause longer than conntrack's CLOSE timer; a real RST (one the stack takes) is
 *   learnt by the client on its first datagram after it, and it reconnects.
 * - A second server with the --tun of a running one fails with exit 2 and leaves the running
 *   one's table and traffic alone.
 * - TCP to the listen port that S only forwards (to another host) is not captured.
 * - Forwarding is turned on only where off, accept_ra=1 interfaces keep router advertisements
 *   (accept_ra=2), and the last instance to exit puts both back.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { ADDR, IFACE } from "../src/addresses.js";
import { destroyAllNamespaces, Namespace } from "../src/namespace.js";
import { SERVER_MAIN } from "../src/paths.js";
import { Rig, type StreamResult } from "../src/rig.js";
import { tcpTransfer } from "../src/tcp-transfer.js";
import { startServer } from "../src/tunnel.js";

const gate = realDeviceGate();
const FORGE = fileURLToPath(new URL("../tools/forge-segment.py", import.meta.url));

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Echoes of datagrams sent at or after `from` (ms, the probe's clock = ours). */
function repliesSentAfter(stream: StreamResult, from: number) {
  return stream.replies.filter(([, sentAt]) => sentAt >= from);
}

/**
 * The last data segment C's connection sent to S during `ms` (captured on S's WAN side): the
 * NATed source port and the sequence number that follows it (what conntrack and the stack
 * expect next).
 */
async function lastClientSegment(rig: Rig, ms: number): Promise<{ port: number; next: number }> {
  const cap = await rig.s.execAsync(
    "timeout",
    [
      String(ms / 1000),
      "tcpdump",
      "-l",
      "-n",
      "-S",
      "-i",
      IFACE.wan,
      `tcp dst port ${rig.serverPort} and greater 80`,
    ],
    ms + 5_000,
  );
  const last = cap.stdout.trim().split("\n").at(-1) ?? "";
  const m = /\.(\d+) > [\d.]+: Flags \S+, seq \d+:(\d+),/.exec(last);
  if (!m) throw new Error(`no data segment captured: ${cap.stdout}${cap.stderr}`);
  return { port: Number(m[1]), next: Number(m[2]) };
}

/** Sends an RST as if from C's connection (R's WAN address and NATed port) to S's port. */
async function forgeRst(rig: Rig, port: number, seq: number, ttl: number): Promise<void> {
  const res = await rig.r.execAsync(
    "python3",
    [
      FORGE,
      "--src",
      ADDR.routerWan,
      "--dst",
      ADDR.tunnelServer,
      "--sport",
      String(port),
      "--dport",
      String(rig.serverPort),
      "--seq",
      String(seq),
      "--flags",
      "R",
      "--ttl",
      String(ttl),
    ],
    10_000,
  );
  if (res.code !== 0) throw new Error(`forge-segment failed: ${res.stderr}`);
}

/**
 * Starts a 60 s stream (a datagram every 20 ms) that pauses from 3 s for `pauseFor` ms and,
 * 1 s in, forges an RST with `ttl` at the sequence number C's connection expects to send next
 * (captured until well into the pause, so the last segment seen is the last one sent).
 * `resumesAt`: when the stream resumes (our clock).
 */
async function pausedStreamWithForgedRst(rig: Rig, pauseFor: number, ttl: number) {
  const pauseAt = 3_000;
  const started = Date.now();
  const stream = rig.startStream({
    intervalMs: 20,
    durationMs: 60_000,
    pauseAtMs: pauseAt,
    pauseForMs: pauseFor,
  });
  await sleep(1_000);
  const { port, next } = await lastClientSegment(rig, 4_000);
  await forgeRst(rig, port, next, ttl);
  return { stream, resumesAt: started + pauseAt + pauseFor };
}

const closed = (rig: Rig, who: "client" | "server") =>
  (rig[who]?.lines ?? [])
    .filter((l) => l.json?.msg === "connection closed")
    .map((l) => String(l.json?.cause));

describe.skipIf(gate.skip)("host rules in the NAT rig", () => {
  let rig: Rig;
  beforeAll(async () => {
    // The server probes every 15 s, the client hardly ever: after a pause, S's side speaks
    // first, as a server answering a quiet client does.
    rig = await Rig.create({
      mode: "tunnel",
      serverArgs: ["--keepalive", "15"],
      clientArgs: ["--keepalive", "60"],
    });
    await rig.startEcho();
  });
  afterAll(async () => {
    await rig?.destroy();
    destroyAllNamespaces();
  });

  it("a forged RST that dies at S (TTL 1) after conntrack saw it does not end the connection", async () => {
    const pauseFor = 25_000; // longer than conntrack's CLOSE timer (10 s)
    const { stream, resumesAt } = await pausedStreamWithForgedRst(rig, pauseFor, 1);
    await sleep(Math.max(0, resumesAt + 5_000 - Date.now()));
    const resumedAt = resumesAt + 1_000;
    const result = await stream.stop();

    expect(closed(rig, "client")).toEqual([]);
    expect(closed(rig, "server")).toEqual([]);
    expect(rig.server!.connectionsOpened()).toBe(1);
    expect(rig.client!.connectionsOpened()).toBe(1);
    // Datagrams after the pause were all echoed over the same connection.
    const after = repliesSentAfter(result, resumedAt).length;
    expect(after).toBeGreaterThan(100);
  });

  it("a real RST (the stack takes it) is learnt by the client on its next datagram, which reconnects", async () => {
    const { stream, resumesAt } = await pausedStreamWithForgedRst(rig, 4_000, 64);
    await rig.server!.waitFor((l) => l.json?.msg === "connection closed", 5_000);
    // The stream's own connection (one per UDP peer) is open by now; the next is the reconnection.
    const openedAtRst = rig.client!.connectionsOpened();
    await sleep(Math.max(0, resumesAt + 4_000 - Date.now()));
    const result = await stream.stop();

    expect(closed(rig, "server")).toContain("peer-reset");
    expect(closed(rig, "client")).toContain("peer-reset");
    expect(rig.client!.connectionsOpened()).toBe(openedAtRst + 1);
    // The first datagram sent after the pause: echoed within ~1 s (the RST that told the
    // client, the new handshake, the datagram) — 2.5 s allowed on a busy machine.
    const first = repliesSentAfter(result, resumesAt)[0];
    expect(first).toBeDefined();
    const [, sentAt, receivedAt] = first;
    console.log(`first echo after the real RST: ${receivedAt - sentAt} ms`);
    expect(receivedAt - sentAt).toBeLessThan(2_500);
  });

  it("TCP to the listen port of another host, forwarded by S, is not captured", async () => {
    expect(await rig.server!.hasNftTable()).toBe(true);
    // A TCP sink on B on the server's port; A connects to it through R and S.
    const { sent, received } = await tcpTransfer(rig.a, rig.b, {
      address: ADDR.appServer,
      port: rig.serverPort,
      bytes: 256 * 1024,
      timeoutMs: 20_000,
    });
    expect(received).toEqual({ bytes: 256 * 1024, sha256: sent.sha256 });
  });
  it("a second server with the same --tun fails (exit 2) and leaves the running one's table and traffic", async () => {
    const second = await rig.s.execAsync(
      process.execPath,
      [
        SERVER_MAIN,
        "--listen",
        String(rig.serverPort),
        "--remote",
        `${ADDR.appServer}:${rig.appPort}`,
        "--tun",
        rig.server!.tun,
      ],
      20_000,
    );
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(/already exists/);
    expect(await rig.server!.hasNftTable()).toBe(true);
    const listed = rig.s.exec("nft", ["list", "table", "inet", `fake_tcp_${rig.server!.tun}`]);
    expect(listed).toContain("fib daddr type local");
    const echo = await rig.udpEcho({ sockets: 2, count: 5, size: 100 });
    expect(echo.sockets.every((s) => s.received === 5)).toBe(true);
  });
});

describe.skipIf(gate.skip)("forwarding and router advertisements", () => {
  afterAll(() => destroyAllNamespaces());

  const read = (ns: Namespace, key: string) =>
    ns.exec("cat", [`/proc/sys/${key.replaceAll(".", "/")}`]).trim();

  it("turns on only what is off, keeps RAs, and the last instance to exit restores both", async () => {
    const ns = new Namespace("fth", "host");
    ns.exec("ip", ["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.sysctl({
      "net.ipv4.ip_forward": 0,
      "net.ipv6.conf.all.forwarding": 0,
      "net.ipv6.conf.d0.accept_ra": 1,
      "net.ipv6.conf.default.accept_ra": 1,
      "net.ipv6.conf.lo.accept_ra": 0,
    });
    const first = await startServer(ns, 4567, "127.0.0.1:7000", { tun: "fth0" });
    expect(read(ns, "net.ipv4.ip_forward")).toBe("1");
    expect(read(ns, "net.ipv6.conf.all.forwarding")).toBe("1");
    expect(read(ns, "net.ipv6.conf.d0.accept_ra")).toBe("2");
    expect(read(ns, "net.ipv6.conf.default.accept_ra")).toBe("2");
    expect(read(ns, "net.ipv6.conf.lo.accept_ra")).toBe("0"); // untouched
    const second = await startServer(ns, 4568, "127.0.0.1:7000", { tun: "fth1" });

    // The first one exits while the second still runs: nothing restored yet.
    await first.stop();
    expect(first.exitStatus).toBe(0);
    expect(read(ns, "net.ipv4.ip_forward")).toBe("1");
    expect(read(ns, "net.ipv6.conf.all.forwarding")).toBe("1");
    expect(read(ns, "net.ipv6.conf.d0.accept_ra")).toBe("2");

    // The last one puts everything back, though it changed nothing itself.
    await second.stop();
    expect(second.exitStatus).toBe(0);
    expect(read(ns, "net.ipv4.ip_forward")).toBe("0");
    expect(read(ns, "net.ipv6.conf.all.forwarding")).toBe("0");
    expect(read(ns, "net.ipv6.conf.d0.accept_ra")).toBe("1");
    expect(read(ns, "net.ipv6.conf.default.accept_ra")).toBe("1");
    expect(ns.exec("nft", ["list", "tables"])).toBe("");
    ns.destroy();
  });

  it("leaves forwarding on at exit when it was on before", async () => {
    const ns = new Namespace("fth", "host");
    ns.sysctl({ "net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1 });
    const server = await startServer(ns, 4567, "127.0.0.1:7000", { tun: "fth2" });
    expect(server.lines.some((l) => l.json?.msg === "forwarding already enabled")).toBe(true);
    await server.stop();
    expect(read(ns, "net.ipv4.ip_forward")).toBe("1");
    expect(read(ns, "net.ipv6.conf.all.forwarding")).toBe("1");
    ns.destroy();
  });
});
