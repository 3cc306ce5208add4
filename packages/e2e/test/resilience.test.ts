/**
 * The tunnel under the events that break real deployments: the server restarts, the NAT
 * router forgets its mappings, the router's conntrack expires flows whose data is never
 * acknowledged, and strangers throw junk and SYN floods at the server's port.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { ADDR } from "../src/addresses.js";
import { destroyAllNamespaces } from "../src/namespace.js";
import { Rig, type StreamResult } from "../src/rig.js";

const gate = realDeviceGate();

/** R's timeout for TCP flows with unacknowledged data, shortened from 300 s. */
const UNACK_TIMEOUT_S = 3;

/**
 * Bound on the recovery after R forgets the flow. The client notices a dead path after about
 * `--keepalive` (1 s) * (1 + 3 probes / 2) = 2.5 s and reconnects at once; the bound leaves
 * more than twice that for a busy shared machine. A path that never recovers fails it.
 */
const RECOVERY_BOUND_MS = 8_000;
/** How long a stream runs after the event whose recovery it measures (past the bound). */
const AFTER_EVENT_MS = RECOVERY_BOUND_MS + 2_000;

/**
 * Fewest echoes that show a 20 ms stream was flowing in a window of about a second (50
 * datagrams): the tests check the tunnel carries them, not how many a loaded machine sends.
 */
const FLOWING = 5;

/**
 * Time from `from` (default `sentAfter`) to the first echo of a datagram sent at or after
 * `sentAfter` (ms), or null. Datagrams sent before `sentAfter` may have been in flight while
 * the path broke, so they prove nothing.
 */
function recoveryMs(stream: StreamResult, sentAfter: number, from = sentAfter): number | null {
  const reply = stream.replies.find(([, sentAt]) => sentAt >= sentAfter);
  return reply ? reply[2] - from : null;
}

/** The longest time between consecutive echoes (ms). */
function longestGapMs(stream: StreamResult): number {
  const times = stream.replies.map(([, , at]) => at).sort((x, y) => x - y);
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
  return gap;
}

/**
 * Runs an echo stream, flushes R's conntrack table `beforeMs` into it, stops it `afterMs`
 * later; the stream, the flush time and the recovery time (see {@link recoveryMs}).
 */
async function flushDuringStream(
  rig: Rig,
  stream: Parameters<Rig["startStream"]>[0],
  beforeMs: number,
  afterMs: number,
): Promise<{ result: StreamResult; flushedAt: number; recovery: number | null }> {
  const running = rig.startStream(stream);
  await sleep(beforeMs);
  const flushedAt = Date.now();
  rig.flushRouterConntrack();
  const flushDoneAt = Date.now();
  await sleep(afterMs);
  const result = await running.stop();
  return { result, flushedAt, recovery: recoveryMs(result, flushDoneAt, flushedAt) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe.skipIf(gate.skip)("tunnel resilience", () => {
  afterAll(() => destroyAllNamespaces());

  describe("restarts and lost NAT state", () => {
    let rig: Rig;
    beforeAll(async () => {
      // Keepalives every second let the client notice a dead path quickly.
      rig = await Rig.create({ mode: "tunnel", clientArgs: ["--keepalive", "1"] });
      await rig.startEcho();
    });
    afterAll(async () => rig?.destroy());

    it("recovers by itself after the server is killed and restarted mid-flow", async () => {
      const stream = rig.startStream({ intervalMs: 20 });
      await sleep(1_000);
      rig.server!.signal("SIGKILL");
      await rig.server!.waitExit(5_000);
      await sleep(500);
      await rig.startServer();
      const restartedAt = Date.now();
      await sleep(6_000);
      const result = await stream.stop();
      const recovery = recoveryMs(result, restartedAt);
      console.log(
        "server restart: recovery after the server was back (ms):",
        recovery,
        "longest gap:",
        longestGapMs(result),
      );
      expect(
        result.replies.filter(([, sentAt]) => sentAt < restartedAt - 600).length,
      ).toBeGreaterThanOrEqual(FLOWING);
      // The restarted server resets the old connection at once (no timer involved).
      expect(recovery).not.toBeNull();
      expect(recovery!).toBeLessThan(5_000);
    });

    it("recovers after R's conntrack table is flushed mid-flow (dead-peer detection)", async () => {
      const { result, flushedAt, recovery } = await flushDuringStream(
        rig,
        { intervalMs: 20 },
        1_000,
        AFTER_EVENT_MS,
      );
      // The client's counters say whether it noticed (closed["dead-peer"]) and reconnected.
      const clientStats = await rig.client!.requestStats();
      console.log(
        "conntrack flush: recovery (ms):",
        recovery,
        "longest gap:",
        longestGapMs(result),
        "client stats:",
        JSON.stringify(clientStats),
      );
      expect(recovery).not.toBeNull();
      expect(recovery!).toBeLessThan(RECOVERY_BOUND_MS);
      // And the flow keeps going afterwards: echoes of datagrams sent after the recovery.
      const recoveredAt = flushedAt + recovery!;
      expect(
        result.replies.filter(([, sentAt]) => sentAt > recoveredAt + 500).length,
      ).toBeGreaterThanOrEqual(FLOWING);
    });

    it("keeps flowing when R's conntrack is flushed and R picks flows up mid-stream (Linux default)", async () => {
      rig.setRouterSysctls({ "net.netfilter.nf_conntrack_tcp_loose": 1 });
      try {
        const { result, recovery } = await flushDuringStream(rig, { intervalMs: 20 }, 1_000, 2_000);
        console.log(
          "conntrack flush, loose tracking: recovery (ms):",
          recovery,
          "longest gap:",
          longestGapMs(result),
        );
        // R picks the flow up again: no reconnection needed, so no timer is involved.
        expect(recovery).not.toBeNull();
        expect(recovery!).toBeLessThan(5_000);
      } finally {
        rig.setRouterSysctls({ "net.netfilter.nf_conntrack_tcp_loose": 0 });
      }
    });

    it("recovers after R's conntrack table is flushed, once the server has answered a keepalive probe", async () => {
      // A quiet spell longer than the keepalive interval lets the client learn that the
      // server answers probes (the stack declares only such peers dead).
      const { result, flushedAt, recovery } = await flushDuringStream(
        rig,
        { intervalMs: 20, pauseAtMs: 300, pauseForMs: 2_500 },
        3_800,
        AFTER_EVENT_MS,
      );
      console.log(
        "conntrack flush after a quiet spell: recovery (ms):",
        recovery,
        "longest gap:",
        longestGapMs(result),
      );
      expect(
        result.replies.filter(([, sentAt]) => sentAt > flushedAt - 1_000 && sentAt < flushedAt)
          .length,
      ).toBeGreaterThanOrEqual(FLOWING);
      expect(recovery).not.toBeNull();
      expect(recovery!).toBeLessThan(RECOVERY_BOUND_MS);
    });
  });

  describe("the client host roams", () => {
    it("reconnects with its new source address when the old one stops working mid-flow", async () => {
      // The client's host rules give the stack's segments the host's source address towards
      // the server, looked up at every connection: a host whose route now prefers another
      // address, and whose old address no longer reaches anything, must come back on the new
      // one (dead-peer detection, then a reconnect that looks the source up again).
      const rig = await Rig.create({ mode: "tunnel", clientArgs: ["--keepalive", "1"] });
      const roamed = "10.201.1.21";
      try {
        await rig.startEcho();
        const running = rig.startStream({ intervalMs: 20 });
        await sleep(1_500);
        const before = rig.routerConntrack().filter((e) => e.dst === ADDR.tunnelServer);
        rig.c.exec("ip", ["addr", "add", `${roamed}/24`, "dev", "lan0"]);
        rig.c.exec("ip", [
          "route",
          "replace",
          ADDR.wanPrefix,
          "via",
          ADDR.routerLan,
          "src",
          roamed,
        ]);
        // The old address is gone from the network's point of view: R passes no TCP of it.
        rig.r.exec(
          "nft",
          ["-f", "-"],
          [
            "table inet roam {",
            "  chain forward {",
            "    type filter hook forward priority -10; policy accept;",
            `    ip saddr ${ADDR.tunnelClient} meta l4proto tcp drop`,
            `    ip daddr ${ADDR.tunnelClient} meta l4proto tcp drop`,
            "  }",
            "}",
            "",
          ].join("\n"),
        );
        const roamedAt = Date.now();
        await sleep(AFTER_EVENT_MS);
        const result = await running.stop();
        const recovery = recoveryMs(result, roamedAt);
        const after = rig
          .routerConntrack()
          .filter((e) => e.dst === ADDR.tunnelServer && e.state === "ESTABLISHED");
        const closes = rig.client!.find(/connection closed/).map((l) => l.json?.cause);
        console.log("roaming:", {
          recovery,
          longestGap: longestGapMs(result),
          before: before.map((e) => `${e.src}:${e.sport} ${e.state}`),
          after: after.map((e) => `${e.src}:${e.sport} ${e.state}`),
          clientCloses: closes,
        });
        expect(before.map((e) => e.src)).toEqual([ADDR.tunnelClient]);
        // The old connection died of dead-peer detection and a new one runs from the new address.
        expect(closes).toContain("dead-peer");
        expect(after.map((e) => e.src)).toContain(roamed);
        expect(recovery).not.toBeNull();
        expect(recovery!).toBeLessThan(RECOVERY_BOUND_MS);
        expect(
          result.replies.filter(([, sentAt]) => sentAt > roamedAt + recovery! + 500).length,
        ).toBeGreaterThanOrEqual(FLOWING);
      } finally {
        await rig.destroy();
      }
    });
  });

  describe("an idle flow and R's conntrack timeout for unacknowledged data", () => {
    let rig: Rig;
    beforeAll(async () => {
      // Default keepalive (10 s, longer than the idle period below): only the stack's own
      // acknowledgements can keep R's conntrack entry alive.
      rig = await Rig.create({
        mode: "tunnel",
        routerSysctls: { "net.netfilter.nf_conntrack_tcp_timeout_unacknowledged": UNACK_TIMEOUT_S },
      });
      await rig.startEcho();
    });
    afterAll(async () => rig?.destroy());

    it(`survives ${2 * UNACK_TIMEOUT_S + 1} s idle (R expires unacknowledged flows after ${UNACK_TIMEOUT_S} s)`, async () => {
      const idleMs = (2 * UNACK_TIMEOUT_S + 1) * 1_000;
      const stream = rig.startStream({
        intervalMs: 20,
        size: 200,
        pauseAtMs: 500,
        pauseForMs: idleMs,
        durationMs: idleMs + 1_500,
      });
      await sleep(500 + idleMs - 500);
      // Near the end of the quiet spell the flow's entry is still in R (strict tracking: a
      // lost entry would drop the flow for good).
      const tunnelFlows = rig
        .routerConntrack()
        .filter(
          (e) => e.proto === "tcp" && e.dst === ADDR.tunnelServer && e.state === "ESTABLISHED",
        );
      expect(tunnelFlows.length).toBe(1);
      await sleep(1_600);
      const result = await stream.stop();
      const resumedAt =
        result.replies.length > 0 ? Math.max(...result.replies.map(([, sentAt]) => sentAt)) : 0;
      const afterIdle = result.replies.filter(([, sentAt]) => sentAt >= resumedAt - 900);
      console.log("idle flow:", {
        sent: result.sent,
        received: result.received,
        echoedAfterIdle: afterIdle.length,
      });
      // The flow was carrying datagrams before the quiet spell.
      expect(
        result.replies.filter(([, sentAt]) => sentAt < result.replies[0][1] + 400).length,
      ).toBeGreaterThanOrEqual(FLOWING);
      // Everything sent after the quiet spell came back...
      expect(result.received).toBe(result.sent);
      expect(afterIdle.length).toBeGreaterThanOrEqual(FLOWING);
      // ...over the same connection: no reconnect was needed.
      expect(rig.server!.connectionsOpened()).toBe(1);
    });
  });

  describe("junk and floods at the server's port", () => {
    let rig: Rig;
    beforeAll(async () => {
      rig = await Rig.create({ mode: "tunnel" });
      await rig.startEcho();
    });
    afterAll(async () => rig?.destroy());

    it("keeps serving the established flow through malformed packets and 10,000 spoofed SYNs, with bounded memory", async () => {
      const stream = rig.startStream({ intervalMs: 20 });
      await sleep(500);
      // The stream's connection must be counted before the abuse starts: its log line comes
      // through the server's shard thread and a pipe, and a busy machine can delay it past
      // the sleep (it would then look like a connection the abuse opened).
      await rig.server!.waitFor(/connection opened/, 10_000);
      const opened = rig.server!.connectionsOpened();
      const rssBefore = rig.server!.rssBytes()!;
      const abuseStart = Date.now();
      const garbage = await rig.rawSend("garbage", 4_000, 7);
      const flood = await rig.rawSend("syn-flood", 10_000, 11);
      const floodEnd = Date.now();
      await sleep(1_000);
      const result = await stream.stop();
      const rssAfter = rig.server!.rssBytes();
      const stats = await rig.server!.requestStats();
      const openedDuringAbuse = rig.server!.connectionsOpened() - opened;
      // New peers get in at once: the listener answers SYNs with cookies and keeps no state.
      let newPeerMs: number | null = null;
      while (newPeerMs === null && Date.now() - floodEnd < 10_000) {
        const probe = await rig.udpEcho({ count: 1, waitMs: 1_000 });
        if (probe.totalReceived === 1) newPeerMs = Date.now() - floodEnd;
      }
      console.log("abuse:", {
        garbage,
        flood,
        streamSent: result.sent,
        streamReceived: result.received,
        longestGapMs: longestGapMs(result),
        rssBefore,
        rssAfter,
        newPeerMs,
        stack: stats.stack,
      });
      expect(garbage.sent).toBe(4_000);
      expect(flood.sent).toBe(10_000);
      expect(rig.server!.running).toBe(true);
      // The established flow kept working during the abuse and after it, on its own
      // connection. (How much of it got through, and its longest gap, depend on how the two
      // shared cores split between the raw sender and the programs: logged above, not judged,
      // beyond most of the stream arriving.)
      const sentDuring = ([, sentAt]: StreamResult["replies"][number]) =>
        sentAt >= abuseStart && sentAt <= floodEnd;
      expect(result.replies.filter(sentDuring).length).toBeGreaterThanOrEqual(FLOWING);
      expect(
        result.replies.filter(([, sentAt]) => sentAt > floodEnd).length,
      ).toBeGreaterThanOrEqual(FLOWING);
      expect(result.received).toBeGreaterThan(result.sent / 2);
      expect(openedDuringAbuse).toBe(0);
      expect(rssAfter).not.toBeNull();
      expect(rssAfter! - rssBefore).toBeLessThan(64 * 1024 * 1024);
      expect(newPeerMs).not.toBeNull();
      // The junk and the SYNs did reach the program (past the kernel), so the above means something.
      const stack = stats.stack as {
        malformed: Record<string, number>;
        cookiesSent: number;
        refusedFull: number;
      };
      expect(Object.values(stack.malformed).reduce((a, b) => a + b, 0)).toBeGreaterThan(100);
      expect(stack.cookiesSent + stack.refusedFull).toBeGreaterThan(1_000);
    });
  });
});
