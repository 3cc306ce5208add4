/**
 * The reconnect storm of issue 18, end to end: the built client in one namespace with a UDP
 * peer sending steadily, and a "server" in another that fails every connection, either by
 * accepting it and resetting it at once (a kernel TCP listener that resets each accepted
 * socket: what a server that cannot deliver to its application does) or by refusing the SYN
 * (no listener: the kernel answers RST). The server's namespace counts the SYNs it receives.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { RunningProgram } from "../../common/test/program-harness.js";

const gate = realDeviceGate();

const CLIENT_ADDR = "10.231.0.1";
const SERVER_ADDR = "10.231.0.2";
const SERVER_PORT = 4567;
const LOCAL_PORT = 1234;

/** Accepts every connection and resets it at once; prints "ready". */
const RESETTING_SERVER = `
const net = require("node:net");
const server = net.createServer((socket) => socket.resetAndDestroy());
server.listen(${SERVER_PORT}, "${SERVER_ADDR}", () => console.log("ready"));
`;

/** Sends a datagram every 20 ms to the client's --local for argv[1] ms, then exits. */
const STEADY_PEER = `
const dgram = require("node:dgram");
const socket = dgram.createSocket("udp4");
const until = Date.now() + Number(process.argv[1]);
const timer = setInterval(() => {
  if (Date.now() >= until) { clearInterval(timer); socket.close(); return; }
  socket.send("ping", ${LOCAL_PORT}, "127.0.0.1");
}, 20);
`;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe.skipIf(gate.skip)("reconnect storm (issue 18)", () => {
  let c: Netns;
  let s: Netns;
  beforeAll(() => {
    c = new Netns("ftrc");
    s = new Netns("ftrs");
    linkNamespaces(c, `${CLIENT_ADDR}/24`, s, `${SERVER_ADDR}/24`);
    // Every connection attempt reaching the server, whatever becomes of it.
    s.exec("nft", ["-f", "-"], {
      input: `table inet storm {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport ${SERVER_PORT} tcp flags & (syn | ack) == syn counter
  }
}
`,
    });
  });
  afterAll(cleanupAll);
  // A failed test leaves nothing running that the next one would trip over (the UDP port).
  const running: { kill(signal: NodeJS.Signals): unknown }[] = [];
  afterEach(async () => {
    for (const child of running.splice(0)) child.kill("SIGKILL");
    await sleep(200);
  });

  /** SYNs the server's namespace has received so far. */
  function syns(): number {
    const listing = s.exec("nft", ["list", "table", "inet", "storm"]);
    const match = /packets (\d+)/.exec(listing);
    if (!match) throw new Error(`no counter in:\n${listing}`);
    return Number(match[1]);
  }

  async function startClient(tun: string): Promise<RunningProgram> {
    const client = new RunningProgram(c, "client", [
      "--local",
      String(LOCAL_PORT),
      "--remote",
      `${SERVER_ADDR}:${SERVER_PORT}`,
      "--tun",
      tun,
      "--queues",
      "1",
    ]);
    running.push(client.child);
    await client.waitFor("fake-tcp-client running");
    return client;
  }

  async function stats(client: RunningProgram): Promise<Record<string, unknown>> {
    const before = client.logged("stats").length;
    client.child.kill("SIGUSR1");
    const deadline = Date.now() + 5_000;
    while (client.logged("stats").length === before && Date.now() < deadline) await sleep(50);
    const line = client.logged("stats").at(-1);
    if (!line) throw new Error("no stats line");
    return line;
  }

  it("a server that accepts and resets every connection sees at most 10 attempts in 10 s; an idle peer causes none", async () => {
    const server = s.spawn(process.execPath, ["-e", RESETTING_SERVER]);
    running.push(server);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("resetting server not ready")), 10_000);
      server.stdout!.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const client = await startClient("ftrc0");
    const start = syns();
    const peer = c.spawn(process.execPath, ["-e", STEADY_PEER, "10000"]);
    await sleep(10_000);
    const inTenSeconds = syns() - start;
    await new Promise((resolve) => peer.once("exit", resolve));
    console.log(`accept-and-reset server: ${inTenSeconds} connection attempts in 10 s`);
    // The storm is real (connections were made and reset)...
    expect(inTenSeconds).toBeGreaterThanOrEqual(3);
    expect(client.logged("connection opened").length).toBeGreaterThanOrEqual(2);
    expect(
      client.logged("connection closed").filter((l) => l.cause === "peer-reset").length,
    ).toBeGreaterThanOrEqual(1);
    // ...and bounded.
    expect(inTenSeconds).toBeLessThanOrEqual(10);

    // The peer went quiet: at most the one reconnect it was already waiting for, then none.
    const atStop = syns();
    await sleep(7_000);
    const settled = syns();
    expect(settled - atStop).toBeLessThanOrEqual(1);
    await sleep(6_000);
    expect(syns()).toBe(settled);

    const counters = await stats(client);
    console.log(
      `client stats: reconnects ${counters.reconnects}, reconnectsDeferred ${counters.reconnectsDeferred}, opened ${counters.opened}`,
    );
    expect(counters.reconnects).toBeGreaterThanOrEqual(2);
    expect(counters.reconnectsDeferred).toBeGreaterThanOrEqual(1);
    expect(client.logged("reconnect deferred").length).toBeGreaterThanOrEqual(1);
    expect((await client.stop()).code).toBe(0);
  }, 60_000);

  it("a server that refuses every SYN sees at most 10 attempts in 10 s", async () => {
    // No listener now: the server's kernel answers each SYN with an RST.
    const client = await startClient("ftrc1");
    const start = syns();
    const peer = c.spawn(process.execPath, ["-e", STEADY_PEER, "10000"]);
    await sleep(10_000);
    const inTenSeconds = syns() - start;
    await new Promise((resolve) => peer.once("exit", resolve));
    console.log(`refusing server: ${inTenSeconds} connection attempts in 10 s`);
    expect(inTenSeconds).toBeGreaterThanOrEqual(3);
    expect(client.logged("connection failed").length).toBeGreaterThanOrEqual(2);
    expect(inTenSeconds).toBeLessThanOrEqual(10);
    const counters = await stats(client);
    expect(counters.failed).toBeGreaterThanOrEqual(inTenSeconds);
    expect((await client.stop()).code).toBe(0);
  }, 60_000);
});
