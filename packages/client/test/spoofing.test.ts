/**
 * Issue 17 defect 4, end to end in the rig's namespaces: while a legitimate peer on A streams
 * through the tunnel, a flood of new UDP sources (2,000 source ports on A, one datagram each)
 * hits the client's --local. The client admits new peers only at its --new-peer-rate, and its
 * full table refuses newcomers rather than push out the active peer, whose connection stays.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { ADDR } from "../../e2e/src/addresses.js";
import { destroyAllNamespaces } from "../../e2e/src/namespace.js";
import { Rig } from "../../e2e/src/rig.js";

const gate = realDeviceGate();

const MAX_CONNECTIONS = 32;
const NEW_PEER_RATE = 20;
const SOURCES = 2_000;

/** One datagram from each of `count` source ports from `base`, ~500 sources a second. */
const FLOOD = `
const dgram = require("node:dgram");
const [target, port, count, base] = process.argv.slice(1);
let sent = 0;
let next = 0;
const timer = setInterval(() => {
  for (let k = 0; k < 5 && next < Number(count); k++, next++) {
    const socket = dgram.createSocket("udp4");
    socket.on("error", () => socket.close());
    socket.bind(Number(base) + next, () =>
      socket.send("who am i", Number(port), target, () => { sent++; socket.close(); }),
    );
  }
  if (next >= Number(count)) {
    clearInterval(timer);
    setTimeout(() => console.log(JSON.stringify({ sent })), 200);
  }
}, 10);
`;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe.skipIf(gate.skip)("new UDP peers under a flood of sources (issue 17 defect 4)", () => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await Rig.create({
      mode: "tunnel",
      clientArgs: [
        "--queues",
        "1",
        "--max-connections",
        String(MAX_CONNECTIONS),
        "--new-peer-rate",
        String(NEW_PEER_RATE),
      ],
    });
    await rig.startEcho();
  });
  afterAll(async () => {
    await rig?.destroy();
    destroyAllNamespaces();
  });

  it("keeps the active peer's session and bounds the new sessions", async () => {
    const client = rig.client!;
    const stream = rig.startStream({ intervalMs: 20, durationMs: 30_000 });
    const opened = await client.waitFor(/connection opened/, 10_000);
    const legit = String(opened.json?.peer);
    expect(legit.startsWith(`${ADDR.appClient}:`)).toBe(true);
    await sleep(1_000);

    const dropsAtC = () => {
      // InErrors: every datagram the kernel dropped at a socket of C (RcvbufErrors included).
      return rig.udpCounters().C?.InErrors ?? 0;
    };
    const dropsBefore = dropsAtC();
    const floodStart = Date.now();
    const flood = await rig.a.execAsync(
      process.execPath,
      ["-e", FLOOD, ADDR.tunnelClient, String(rig.localPort), String(SOURCES), "20000"],
      60_000,
    );
    const floodMs = Date.now() - floodStart;
    expect(JSON.parse(flood.stdout)).toEqual({ sent: SOURCES });
    await sleep(2_000);
    const result = await stream.stop();
    const stats = await client.requestStats(/^stats$/);
    console.log(
      "flood of new sources:",
      JSON.stringify({
        sources: SOURCES,
        floodMs,
        legit,
        streamSent: result.sent,
        streamReceived: result.received,
        connections: stats.connections,
        opened: stats.opened,
        peersRefusedRate: stats.peersRefusedRate,
        peersRefusedFull: stats.peersRefusedFull,
      }),
    );

    // The active peer kept its one connection throughout, and its echoes kept coming.
    const legitClosed = client.find(/connection closed/).filter((l) => l.json?.peer === legit);
    expect(legitClosed).toEqual([]);
    const legitOpened = client.find(/connection opened/).filter((l) => l.json?.peer === legit);
    expect(legitOpened).toHaveLength(1);
    const lateReplies = result.replies.filter(([, sentAt]) => sentAt > floodStart + floodMs);
    expect(lateReplies.length).toBeGreaterThan(0);
    expect(result.received).toBeGreaterThanOrEqual(result.sent * 0.9);

    // New sessions: at most the table's room, never more than the rate allows.
    const allowed = NEW_PEER_RATE + Math.ceil((NEW_PEER_RATE * floodMs) / 1000);
    expect(Number(stats.opened)).toBeLessThanOrEqual(1 + Math.min(MAX_CONNECTIONS, allowed));
    expect(Number(stats.connections)).toBeLessThanOrEqual(MAX_CONNECTIONS);
    // Every source whose datagram reached the client's socket was either let in or refused.
    const refused = Number(stats.peersRefusedRate) + Number(stats.peersRefusedFull);
    const dropped = dropsAtC() - dropsBefore;
    expect(refused + (Number(stats.opened) - 1) + dropped).toBeGreaterThanOrEqual(SOURCES);
    expect(refused + (Number(stats.opened) - 1)).toBeLessThanOrEqual(SOURCES);
    // No session ended at all: nobody was pushed out.
    expect(stats.closed).toBe(0);

    // The refusals were logged at a bounded rate (20 lines per 10 s), the rest summarized.
    expect(client.count((l) => l.json?.msg === "new peer refused")).toBeLessThanOrEqual(40);
    const summary = await client.waitFor(
      (l) => l.json?.msg === "log lines suppressed" && l.json.of === "new peer refused",
      15_000,
    );
    console.log(
      `"new peer refused": ${client.count((l) => l.json?.msg === "new peer refused")} lines logged, ${summary.json!.suppressed} suppressed in the first window`,
    );
    expect(Number(summary.json!.suppressed)).toBeGreaterThan(1_000);
  }, 90_000);
});
