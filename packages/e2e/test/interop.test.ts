/**
 * Interoperability with phantun 0.8 over the namespace rig, against the phantun-shaped
 * stand-in (`tools/phantun-shaped.ts`: phantun's wire behaviour, its host rules), in both
 * pairings: long one-way flows in each direction and an idle spell must neither close the
 * connection nor lose a datagram, although the stand-in, like phantun, never answers a
 * keepalive probe except by the accident of its ACK rule. And between two of our programs,
 * a server that dies is still detected dead and the client reconnects once it is back.
 */
import { afterAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { FlowSink, flowDown, flowUp } from "../src/flow.js";
import { destroyAllNamespaces } from "../src/namespace.js";
import type { LogLine } from "../src/process.js";
import { Rig } from "../src/rig.js";
import type { TunnelProgram } from "../src/tunnel.js";

const gate = realDeviceGate();

/** --keepalive of our programs, in seconds. */
const KEEPALIVE_S = 1;
/**
 * Our dead-peer detection time: a peer that answers probes is declared dead after the
 * keepalive interval plus the default 3 unanswered probes repeated every half interval.
 */
const DETECTION_MS = KEEPALIVE_S * 1000 * (1 + 3 / 2);
/** Every phase (a one-way flow, an idle spell) outlasts 3 keepalive intervals + detection. */
const PHASE_MS = 3 * KEEPALIVE_S * 1000 + DETECTION_MS + 1_500;
/** 200 datagrams/s of 200 bytes: modest enough that the rig itself loses nothing. */
const INTERVAL_MS = 5;
const SIZE = 200;
const PHASE_COUNT = PHASE_MS / INTERVAL_MS;
/** A's source port for every run of a test: one UDP peer, hence one tunnel connection. */
const A_PORT = 40_001;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The "connection closed" lines of a program, reduced to what says why. */
function closes(p: TunnelProgram): Array<Record<string, unknown>> {
  return p
    .find("connection closed")
    .map((l: LogLine) => ({ cause: l.json?.cause, seconds: l.json?.seconds, at: l.at }));
}

/**
 * Up (A → B) for a phase, down (B → A) for a phase, idle for a phase, then a short run each
 * way, all from one source port: what the sink and A counted, and both programs' counters.
 */
async function flowsAndIdle(rig: Rig, sink: FlowSink) {
  const target = rig.appTarget;
  const run = { intervalMs: INTERVAL_MS, size: SIZE, bindPort: A_PORT };
  const up = await flowUp(rig.a, target, { ...run, run: 1, count: PHASE_COUNT });
  const down = await flowDown(rig.a, target, { ...run, run: 2, count: PHASE_COUNT });
  await sleep(PHASE_MS);
  const upAfterIdle = await flowUp(rig.a, target, { ...run, run: 3, count: 200 });
  const downAfterIdle = await flowDown(rig.a, target, { ...run, run: 4, count: 200 });
  await sleep(300);
  return { up, down, upAfterIdle, downAfterIdle, sink: await sink.stats() };
}

async function programStats(p: TunnelProgram): Promise<Record<string, unknown>> {
  return p.flavor === "ours" ? p.requestStats() : p.requestStats(/^stats$/);
}

describe.skipIf(gate.skip)("interoperability with phantun-shaped peers", () => {
  afterAll(() => destroyAllNamespaces());

  for (const phantun of ["server", "client"] as const) {
    const ours = phantun === "server" ? "client" : "server";
    it.concurrent(`our ${ours} with a phantun-shaped ${phantun}: one-way flows each way and an idle spell, no close, nothing lost`, async () => {
      // Our client as ready to spread a peer over two connections as it can be: towards a
      // phantun server it must still open exactly one per UDP peer.
      const ourArgs = ["--keepalive", String(KEEPALIVE_S)];
      if (ours === "client") ourArgs.push("--queues", "2", "--flows", "2", "--flow-rate", "0");
      const rig = await Rig.create({
        mode: "tunnel",
        phantunShaped: phantun,
        clientArgs: ours === "client" ? ourArgs : [],
        serverArgs: ours === "server" ? ourArgs : [],
      });
      try {
        const sink = await FlowSink.start(rig.b, rig.appPort);
        const started = Date.now();
        const r = await flowsAndIdle(rig, sink);
        const ourProgram = ours === "client" ? rig.client! : rig.server!;
        const theirProgram = phantun === "client" ? rig.client! : rig.server!;
        const stats = {
          ours: await programStats(ourProgram),
          theirs: await programStats(theirProgram),
        };
        console.log(
          `our ${ours} / phantun-shaped ${phantun} (${Date.now() - started} ms):`,
          JSON.stringify({ ...r, closes: closes(ourProgram), stats }),
        );
        const peer = stats.theirs.peer as {
          packetsSent: number;
          pureAcksSent: number;
          rstReceived: number;
        };
        // What to suspect when a flow stalls without a close.
        const hint =
          `(the phantun-shaped ${phantun} sent ${peer.packetsSent} packets, ${peer.pureAcksSent} of ` +
          "them pure ACKs: a phantun peer that has sent nothing since its SYN-ACK has not told " +
          "conntrack its window scale, so conntrack on the path, our client's own host rules " +
          "included, drops data more than ~128 KiB past its ack)";
        expect(closes(ourProgram), `our ${ours} closed the connection`).toEqual([]);
        expect(closes(theirProgram), `the phantun-shaped ${phantun} closed`).toEqual([]);
        expect(ourProgram.connectionsOpened()).toBe(1);
        expect(theirProgram.connectionsOpened()).toBe(1);
        expect(r.sink["1"], `flow A -> B ${hint}`).toMatchObject({
          received: PHASE_COUNT,
          distinct: PHASE_COUNT,
        });
        expect(r.down, `flow B -> A ${hint}`).toEqual({
          received: PHASE_COUNT,
          distinct: PHASE_COUNT,
        });
        expect(r.sink["3"], `A -> B after the idle spell ${hint}`).toMatchObject({
          received: 200,
          distinct: 200,
        });
        expect(r.downAfterIdle, `B -> A after the idle spell ${hint}`).toEqual({
          received: 200,
          distinct: 200,
        });
        expect(peer.rstReceived).toBe(0);
        // No flow group was attempted towards (or accepted from) the phantun-shaped peer.
        expect(stats.ours.flowGroups).toBe(0);
        expect(stats.ours.flowMembers).toBe(0);
      } finally {
        await rig.destroy();
      }
    }, 120_000);
  }

  it.concurrent("two of our programs: a killed server is detected dead mid-flow, the client reconnects once it is back", async () => {
    const ourArgs = ["--keepalive", String(KEEPALIVE_S)];
    const rig = await Rig.create({ mode: "tunnel", clientArgs: ourArgs, serverArgs: ourArgs });
    try {
      const sink = await FlowSink.start(rig.b, rig.appPort);
      // One flow A → B throughout: 20 s at 100 datagrams/s, from one source port.
      const count = 2_000;
      const flow = flowUp(rig.a, rig.appTarget, {
        run: 1,
        count,
        intervalMs: 10,
        size: SIZE,
        bindPort: A_PORT,
      });
      const client = rig.client!;
      await client.waitFor("connection opened", 10_000);
      await sleep(2_000);
      const killedAt = Date.now();
      rig.server!.signal("SIGKILL");
      await rig.server!.waitExit(5_000);
      const closed = await client.waitFor("connection closed", 5 * DETECTION_MS, killedAt);
      const detectedMs = closed.at - killedAt;
      const restartAt = Date.now();
      await rig.startServer();
      // Any connection opened after the close is the reconnect (it may come before the new
      // server has logged that it runs).
      const reopened = await client.waitFor("connection opened", 15_000, closed.at);
      await flow;
      await sleep(300);
      const got = (await sink.stats())["1"];
      console.log(
        "dead server:",
        JSON.stringify({
          detectedMs,
          reconnectMs: reopened.at - restartAt,
          cause: closed.json?.cause,
          failedConnects: client.count("connection failed"),
          sink: got,
        }),
      );
      expect(closed.json?.cause).toBe("dead-peer");
      expect(detectedMs).toBeLessThan(3 * DETECTION_MS);
      // The flow went on over the new connection to its very end.
      expect(got.highest).toBe(count - 1);
      expect(got.received).toBeGreaterThan(count / 4);
    } finally {
      await rig.destroy();
    }
  }, 120_000);
});
