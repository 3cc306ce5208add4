/**
 * Both programs end to end in two namespaces linked by a veth pair:
 *
 *   sender (UDP) -> fake-tcp-client [nsC 10.77.0.1] == veth == [nsS 10.77.0.2] fake-tcp-server -> echo (UDP, 127.0.0.1)
 *
 * Real TUN devices, the programs' own nft rules (masquerade in nsC, address rewrite in nsS), the
 * kernel's forwarding and conntrack. Checks datagrams both ways (the first ones queued while
 * connecting), handshake packets both ways, a connection per UDP peer, replies from the
 * address the peer sent to on a wildcard listen, reconnection after the server restarts, and
 * teardown on SIGTERM.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { startUdpEcho } from "../../../test-support/udp-scripts.js";
import { RunningProgram } from "../../common/test/program-harness.js";

const gate = realDeviceGate();

/**
 * Sends COUNT datagrams from ADDR:SRC to ADDR:1234 20 ms apart on a connected socket (so
 * only replies from exactly ADDR:1234 are received), waits (bounded) for their echoes,
 * prints every datagram received as JSON and exits.
 */
const SENDER = `
const [addr, src, count, waitMs] = process.argv.slice(1);
const s = require("node:dgram").createSocket("udp4");
const received = [];
s.on("message", (m) => received.push(m.toString("latin1")));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
s.bind(Number(src), addr, () => s.connect(1234, addr, async () => {
  for (let i = 0; i < Number(count); i++) {
    s.send(Buffer.from("ping-" + i + "-" + "x".repeat(i * 37)));
    await sleep(20);
  }
  const deadline = Date.now() + Number(waitMs);
  while (Date.now() < deadline && received.filter((r) => r.startsWith("ping-")).length < Number(count))
    await sleep(20);
  console.log(JSON.stringify(received));
  s.close();
}));
`;

/** Runs the sender in `ns` without blocking the event loop (the programs' logs keep flowing). */
async function runSender(ns: Netns, src: number, count: number, addr = "127.0.0.1") {
  const stdout = await ns.runNodeScript(SENDER, [addr, String(src), String(count), "5000"], 15_000);
  return JSON.parse(stdout) as string[];
}

function pings(received: string[]): string[] {
  return received.filter((r) => r.startsWith("ping-")).sort();
}

function expectedPings(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `ping-${i}-${"x".repeat(i * 37)}`).sort();
}

describe.skipIf(gate.skip)("fake-tcp-client <-> fake-tcp-server in namespaces", () => {
  let nsC: Netns;
  let nsS: Netns;
  let dir: string;
  let client: RunningProgram;
  const serverArgs = () => [
    "--listen",
    "4567",
    "--remote",
    "127.0.0.1:7777",
    "--tun",
    "ftse0",
    "--handshake-packet",
    join(dir, "server-hello"),
  ];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ftc-e2e-"));
    writeFileSync(join(dir, "client-hello"), "HELLO-FROM-CLIENT");
    writeFileSync(join(dir, "server-hello"), "HELLO-FROM-SERVER");
    nsC = new Netns("ftec");
    nsS = new Netns("ftes");
    linkNamespaces(nsC, "10.77.0.1/24", nsS, "10.77.0.2/24");
    nsC.exec("ip", ["-6", "addr", "add", "fd77::1/64", "dev", "veth0", "nodad"]);
    nsS.exec("ip", ["-6", "addr", "add", "fd77::2/64", "dev", "veth1", "nodad"]);
    await startUdpEcho(nsS, 7777);
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it("carries datagrams both ways, with handshake packets, one connection per peer", async () => {
    const server = new RunningProgram(nsS, "server", serverArgs());
    await server.waitFor("fake-tcp-server running");
    client = new RunningProgram(nsC, "client", [
      "--local",
      "0.0.0.0:1234",
      "--remote",
      "10.77.0.2:4567",
      "--tun",
      "ftce0",
      "--handshake-packet",
      join(dir, "client-hello"),
    ]);
    await client.waitFor("fake-tcp-client running");

    const first = await runSender(nsC, 40001, 20);
    // Every datagram came back, including those sent while the connection was being set up.
    expect(pings(first)).toEqual(expectedPings(20));
    // The server's handshake packet reached the UDP peer; the client's went to the echo
    // application (the first datagram it saw) and came back.
    expect(first).toContain("HELLO-FROM-SERVER");
    expect(first).toContain("HELLO-FROM-CLIENT");

    // Listening on 0.0.0.0: replies leave from the address the peer sent to (the sender's
    // connected socket drops anything else).
    const running = await client.waitFor("fake-tcp-client running");
    expect(running.listen).toEqual(expect.arrayContaining(["127.0.0.1:1234", "10.77.0.1:1234"]));
    const second = await runSender(nsC, 40002, 5, "10.77.0.1");
    expect(pings(second)).toEqual(expectedPings(5));

    await client.waitFor("connection opened", (l) => l.peer === "10.77.0.1:40002");
    await server.waitFor(
      "connection opened",
      () => server.logged("connection opened").length === 2,
    );
    const opened = client.logged("connection opened");
    expect(opened.map((l) => l.peer).sort()).toEqual(["10.77.0.1:40002", "127.0.0.1:40001"]);
    expect(opened[0].remote).toBe("10.77.0.2:4567");
    expect(String(opened[0].local)).toMatch(/^192\.168\.200\.2:\d+$/);
    const serverOpened = server.logged("connection opened");
    expect(serverOpened).toHaveLength(2);
    expect(String(serverOpened[0].peer)).toMatch(/^10\.77\.0\.1:\d+$/);
    expect(serverOpened[0].remote).toBe("127.0.0.1:7777");

    // The server restarts: its RSTs close the client's connections...
    const stopped = await server.stop();
    console.log(`server SIGTERM -> exit ${stopped.code} in ${stopped.ms} ms`);
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(2_000);
    await client.waitFor("connection closed", (l) => l.peer === "127.0.0.1:40001");
    expect(client.logged("connection closed").map((l) => l.cause)).toContain("peer-reset");

    // ...and the same peer's next datagram opens a new one, without losing that datagram.
    const restarted = new RunningProgram(nsS, "server", serverArgs());
    await restarted.waitFor("fake-tcp-server running");
    const third = await runSender(nsC, 40001, 3);
    expect(pings(third)).toEqual(expectedPings(3));
    expect(
      client.logged("connection opened").filter((l) => l.peer === "127.0.0.1:40001"),
    ).toHaveLength(2);

    // Counters on SIGUSR1.
    client.child.kill("SIGUSR1");
    const stats = await client.waitFor("stats");
    expect(stats.udpToTunnel).toBeGreaterThanOrEqual(28);
    expect(stats.tunnelToUdp).toBeGreaterThanOrEqual(28);

    // Client shutdown: RST to the server, rules and device gone, exit 0 within 2 s.
    const clientStopped = await client.stop();
    console.log(`client SIGTERM -> exit ${clientStopped.code} in ${clientStopped.ms} ms`);
    expect(clientStopped.code).toBe(0);
    expect(clientStopped.ms).toBeLessThan(2_000);
    await restarted.waitFor("connection closed", (l) => l.cause === "peer-reset");
    expect(nsC.exec("nft", ["list", "ruleset"])).not.toContain("fake_tcp_ftce0");
    expect(nsC.exec("ip", ["-o", "link", "show"])).not.toContain("ftce0");
    expect((await restarted.stop()).code).toBe(0);
    expect(nsS.exec("nft", ["list", "ruleset"])).not.toContain("fake_tcp_ftse0");
  });

  it("works over IPv6 (ip6 masquerade and rewrite rules, IPv6 forwarding)", async () => {
    const server = new RunningProgram(nsS, "server", serverArgs());
    await server.waitFor("fake-tcp-server running");
    const v6client = new RunningProgram(nsC, "client", [
      "--local",
      "1234",
      "--remote",
      "[fd77::2]:4567",
      "--tun",
      "ftce6",
    ]);
    await v6client.waitFor("fake-tcp-client running");
    expect(nsC.exec("cat", ["/proc/sys/net/ipv6/conf/all/forwarding"]).trim()).toBe("1");
    const received = await runSender(nsC, 40003, 10);
    expect(pings(received)).toEqual(expectedPings(10));
    const opened = await v6client.waitFor("connection opened");
    expect(opened.remote).toBe("[fd77::2]:4567");
    expect(String(opened.local)).toMatch(/^\[fcc8::2\]:\d+$/);
    const serverOpened = await server.waitFor("connection opened");
    expect(String(serverOpened.peer)).toMatch(/^\[fd77::1\]:\d+$/);
    expect((await v6client.stop()).code).toBe(0);
    expect((await server.stop()).code).toBe(0);
  });
});
