/**
 * A hostile WAN: an attacker namespace X between R and S (see `TopologyOptions.wanAttacker`)
 * forges packets with the stack's own wire codecs (tools/tcp-injector):
 *
 *  - issue 10: a blind attacker who knows the client's public tuple (from R's conntrack) but
 *    no sequence numbers throws RSTs, forged data, spoofed SYNs and malformed packets at a
 *    busy echoed flow, in both directions (as the client towards S, as the server towards
 *    the client's public tuple at R), with S's conntrack at its defaults and with
 *    nf_conntrack_tcp_be_liberal=1 on S (then only the stacks' own checks stand in the way);
 *    C's conntrack at its defaults in both runs;
 *  - issue 17, defect 1: handshakes reset right after their ACK must not leak relays or fds;
 *  - issue 17, defect 2: a few kept-alive handshakes must not lock legitimate clients out.
 */
import { readdirSync } from "node:fs";
import { setPriority } from "node:os";
import { afterAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { ADDR } from "../src/addresses.js";
import { destroyAllNamespaces } from "../src/namespace.js";
import type { ManagedProcess } from "../src/process.js";
import { Rig } from "../src/rig.js";
import { longestSilenceMs } from "../src/stream-figures.js";

const gate = realDeviceGate();

const MiB = 1024 * 1024;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Packets X routed (its kernel's IP ForwDatagrams): what the injector wrote into its TUN
 * device and X put on the WAN. The rig's own traffic crosses X's switch bridged, not routed.
 */
function attackerForwarded(rig: Rig): number {
  const lines = rig.x
    .exec("cat", ["/proc/net/snmp"])
    .split("\n")
    .filter((l) => l.startsWith("Ip:"));
  const names = lines[0].split(/\s+/);
  return Number(lines[1].split(/\s+/)[names.indexOf("ForwDatagrams")]);
}

/**
 * Raises every thread of every process in the rig's namespaces to nice -10: the rig's
 * programs, apps, probe and attacker keep their share of a shared, busy machine (the issue's
 * 4,000 datagrams/s and 99 % are about the tunnel, not about the neighbours), while among
 * themselves they stay equal. Processes started later need another call.
 */
function prioritise(rig: Rig): void {
  for (const ns of rig.topology.namespaces) {
    for (const pid of ns.pids()) {
      let tids: string[] = [];
      try {
        tids = readdirSync(`/proc/${pid}/task`);
      } catch {}
      for (const tid of tids) {
        try {
          setPriority(Number(tid), -10);
        } catch {}
      }
    }
  }
}

/**
 * Per host, what its kernel made of the attack: segments its conntrack found invalid, and
 * RSTs its own TCP sent (for segments that reached it instead of a stack).
 */
function hostCounters(rig: Rig): Record<string, { conntrackInvalid: number; tcpResets: number }> {
  const out: Record<string, { conntrackInvalid: number; tcpResets: number }> = {};
  for (const ns of [rig.c, rig.s]) {
    let conntrackInvalid = 0;
    try {
      for (const m of ns.exec("conntrack", ["-S"]).matchAll(/invalid=(\d+)/g))
        conntrackInvalid += Number(m[1]);
    } catch {}
    const tcp = ns
      .exec("cat", ["/proc/net/snmp"])
      .split("\n")
      .filter((l) => l.startsWith("Tcp:"))
      .map((l) => l.split(/\s+/));
    const tcpResets = tcp.length === 2 ? Number(tcp[1][tcp[0].indexOf("OutRsts")]) : 0;
    out[ns.role] = { conntrackInvalid, tcpResets };
  }
  return out;
}

/** Open file descriptors of a process (every thread's: they share one table). */
function fdCount(proc: ManagedProcess): number {
  return readdirSync(`/proc/${proc.pid}/fd`).length;
}

interface ServerStats {
  connections: number;
  opened: number;
  closed: number;
  udpToTunnel: number;
  tunnelToUdp: number;
  stack: {
    connections: number;
    packetsReceived: number;
    closed: Record<string, number>;
    [key: string]: unknown;
  };
}

async function serverStats(rig: Rig): Promise<ServerStats> {
  return (await rig.server!.requestStats()) as unknown as ServerStats;
}

describe.skipIf(gate.skip)("a hostile WAN", () => {
  afterAll(() => destroyAllNamespaces());

  describe("issue 10: a blind attacker against an established, busy flow", () => {
    /** The floor for the flow, and the rate asked of the probe (with some headroom). */
    const MIN_RATE = 4_000;
    const RATE = 4_400;
    const ATTACK_MS = 10_000;
    const attack = { rsts: 20_000, data: 20_000, syns: 10_000, malformed: 3_000 };

    /**
     * R, a third-party router, judges no TCP windows in these runs: a strict one lets the
     * forgeries towards the client that happen to fall in its window (a quarter of them:
     * the client announces window scale 14, a 1 GiB window) move its idea of the flow, then
     * drops the flow's real segments as invalid, whatever our programs do. Liberal, it lets
     * every forgery through to C, a harder test of our hosts and stacks.
     */
    const liberalConntrack = { "net.netfilter.nf_conntrack_tcp_be_liberal": 1 };

    it.each([
      { conntrack: "at its defaults", liberal: false },
      { conntrack: "with nf_conntrack_tcp_be_liberal=1", liberal: true },
    ])(
      "keeps the flow whole with S's conntrack $conntrack",
      async ({ liberal }) => {
        const rig = await Rig.create({ mode: "tunnel", wanAttacker: true });
        try {
          rig.setRouterSysctls(liberalConntrack);
          // The two runs differ in S's conntrack only, as issue 10 defines them; C's stays at
          // its defaults in both (its host rules keep the tunnel's segments out of conntrack,
          // so forgeries towards the client cannot desynchronise a NAT entry there).
          // Liberal S: only the stacks' own checks stand between the forgeries and the flow.
          if (liberal) rig.s.sysctl(liberalConntrack);
          await rig.startEcho();
          const server = rig.server!;
          const client = rig.client!;
          const echoBefore = await rig.echoStats();
          const forwardedBefore = attackerForwarded(rig);
          const udpBefore = rig.udpCounters();
          const hostsBefore = hostCounters(rig);

          // Stopped (SIGTERM) 2 s after the flood ends; the duration is only a bound, long
          // enough for an injector that starts slowly on a busy machine.
          const stream = rig.startStream({ ratePerSecond: RATE, durationMs: ATTACK_MS + 60_000 });
          await sleep(2_000);
          prioritise(rig);
          // The stream's connection is the only one: the attacker reads its public tuple.
          const flows = rig
            .routerConntrack()
            .filter((e) => e.proto === "tcp" && e.dst === ADDR.tunnelServer);
          expect(flows.map((e) => e.state)).toEqual(["ESTABLISHED"]);
          const tuple = rig.clientPublicTuple();
          expect(tuple).not.toBeNull();
          const openedBefore = server.connectionsOpened();
          const clientOpenedBefore = client.connectionsOpened();
          const rssBefore = server.rssBytes()!;
          const attackStart = Date.now();
          const injector = await rig.startInjector("flood", [
            "--client",
            `${tuple!.address}:${tuple!.port}`,
            "--spoof-prefix",
            ADDR.spoofPrefix,
            "--duration",
            String(ATTACK_MS),
            "--rsts",
            String(attack.rsts),
            "--data",
            String(attack.data),
            "--syns",
            String(attack.syns),
            "--malformed",
            String(attack.malformed),
            "--seed",
            liberal ? "2" : "1",
          ]);
          prioritise(rig);
          const flood = await rig.injectorResult(injector, ATTACK_MS + 30_000);
          await sleep(2_000);
          const result = await stream.stop();
          const echoAfter = await rig.echoStats();
          const rssAfter = server.rssBytes();
          const forwardedAfter = attackerForwarded(rig);
          const udpAfter = rig.udpCounters();
          const hostsAfter = hostCounters(rig);
          const serverAfter = server.running ? await serverStats(rig) : null;
          const clientAfter = client.running ? await client.requestStats() : null;

          const forgedAtB = echoAfter.forged - echoBefore.forged;
          const arrived = echoAfter.datagrams - echoBefore.datagrams - forgedAtB;
          const silence = longestSilenceMs(result, attackStart);
          const sendRate = (1_000 * result.sent) / (result.lastSentAt! - result.firstSentAt!);
          const figures = {
            liberal,
            tuple,
            flood: { ...flood, kinds: undefined, stats: undefined },
            forwardedByAttacker: forwardedAfter - forwardedBefore,
            sent: result.sent,
            sendRate: Math.round(sendRate),
            arrivedAtB: arrived,
            arrivedPct: Math.round((1e4 * arrived) / result.sent) / 100,
            echoed: result.received,
            echoedPct: Math.round((1e4 * result.received) / result.sent) / 100,
            mismatched: result.mismatched,
            forgedAtB,
            forgedAtA: result.forged,
            longestSilenceMs: silence,
            serverOpened: server.connectionsOpened() - openedBefore,
            serverClosed: server.connectionsClosed(),
            clientOpened: client.connectionsOpened() - clientOpenedBefore,
            clientClosed: client.connectionsClosed(),
            closedLines: [...server.find(/connection closed/), ...client.find(/connection closed/)]
              .map((l) => l.text)
              .slice(0, 10),
            serverRunning: server.running,
            clientRunning: client.running,
            // Where datagrams were lost to full socket buffers (a busy machine), if anywhere.
            udpBufferErrors: Object.fromEntries(
              Object.entries(udpAfter).map(([ns, c]) => [
                ns,
                c.RcvbufErrors - (udpBefore[ns]?.RcvbufErrors ?? 0),
              ]),
            ),
            hostKernels: Object.fromEntries(
              Object.entries(hostsAfter).map(([host, c]) => [
                host,
                {
                  conntrackInvalid: c.conntrackInvalid - hostsBefore[host].conntrackInvalid,
                  tcpResets: c.tcpResets - hostsBefore[host].tcpResets,
                },
              ]),
            ),
            rssGrowthMiB: rssAfter === null ? null : (rssAfter - rssBefore) / MiB,
            // Where the datagrams went: into the tunnel at each end, out of it at the other,
            // and into the applications' hosts.
            path: {
              clientUdpToTunnel: clientAfter?.udpToTunnel,
              serverTunnelToUdp: serverAfter?.tunnelToUdp,
              bReceived: udpAfter.B.InDatagrams - udpBefore.B.InDatagrams,
              serverUdpToTunnel: serverAfter?.udpToTunnel,
              clientTunnelToUdp: clientAfter?.tunnelToUdp,
              aReceived: udpAfter.A.InDatagrams - udpBefore.A.InDatagrams,
            },
            serverStack: serverAfter?.stack,
            clientStack: (clientAfter as { stack?: unknown } | null)?.stack,
          };
          console.log(`issue 10 (${liberal ? "liberal" : "default"} conntrack on S):`, figures);

          // Every criterion is checked and reported (soft), so that a failure names them all.
          // The attack happened: everything planned was put on the WAN.
          expect.soft(flood.sent).toBe(attack.rsts + attack.data + attack.syns + attack.malformed);
          expect
            .soft(forwardedAfter - forwardedBefore)
            .toBeGreaterThanOrEqual(flood.sent as number);
          // ...during a flow of at least 4,000 datagrams/s that outlasted the attack.
          expect.soft(result.lastSentAt!).toBeGreaterThan(attackStart + ATTACK_MS);
          expect.soft(sendRate, "datagrams/s sent").toBeGreaterThanOrEqual(MIN_RATE);
          // Both programs run on, and no connection was reset or replaced.
          expect.soft(server.running).toBe(true);
          expect.soft(client.running).toBe(true);
          expect.soft(server.connectionsClosed(), "connections the server closed").toBe(0);
          expect.soft(client.connectionsClosed(), "connections the client closed").toBe(0);
          expect.soft(server.connectionsOpened()).toBe(openedBefore);
          expect.soft(client.connectionsOpened()).toBe(clientOpenedBefore);
          // No forged datagram reached either application.
          expect.soft(forgedAtB, "forged datagrams at B").toBe(0);
          expect.soft(result.forged, "forged datagrams at A").toBe(0);
          // The flow carried on.
          expect
            .soft(arrived, "datagrams that arrived at B")
            .toBeGreaterThanOrEqual(0.99 * result.sent);
          expect
            .soft(result.received, "datagrams echoed")
            .toBeGreaterThanOrEqual(0.98 * result.sent);
          expect.soft(silence, "longest silence (ms)").toBeLessThan(1_000);
          expect(rssAfter).not.toBeNull();
          expect.soft(rssAfter! - rssBefore, "server RSS growth (bytes)").toBeLessThan(50 * MiB);
        } finally {
          await rig.destroy();
        }
      },
      120_000,
    );
  });

  describe("issue 17: handshakes as a weapon", () => {
    it("leaks no relay and no fd from 1,000 handshakes reset right after their ACK", async () => {
      const rig = await Rig.create({ mode: "tunnel", wanAttacker: true, startTunnel: false });
      try {
        const server = await rig.startServer(["--max-connections", "50", "--idle-timeout", "3"]);
        await sleep(500);
        const fdsBefore = fdCount(server);
        const before = await serverStats(rig);
        const injector = await rig.startInjector("churn", [
          "--count",
          "1000",
          "--concurrency",
          "10",
          "--source-base",
          "10.201.64.1",
          "--sources",
          "50",
          "--timeout",
          "2000",
        ]);
        const churn = await rig.injectorResult(injector, 90_000);
        // Anything legitimately open ends within the idle timeout (3 s) and the handshake
        // timeouts (3 x 1 s); poll a while longer for the counts to settle.
        let after = await serverStats(rig);
        let fdsAfter = fdCount(server);
        const settleUntil = Date.now() + 15_000;
        while (
          Date.now() < settleUntil &&
          (after.connections > before.connections ||
            after.stack.connections > before.stack.connections ||
            fdsAfter > fdsBefore)
        ) {
          await sleep(500);
          after = await serverStats(rig);
          fdsAfter = fdCount(server);
        }
        console.log("issue 17 defect 1:", {
          churn,
          fdsBefore,
          fdsAfter,
          relaysBefore: before.connections,
          relaysAfter: after.connections,
          stackConnectionsAfter: after.stack.connections,
          opened: after.opened - before.opened,
          closed: after.closed - before.closed,
          stackClosed: after.stack.closed,
        });
        // The sequences did happen: most handshakes were answered, then acked and reset.
        expect(churn.completed as number).toBeGreaterThanOrEqual(500);
        expect(server.running).toBe(true);
        expect(after.connections).toBe(before.connections);
        expect(after.stack.connections).toBe(before.stack.connections);
        expect(fdsAfter).toBeLessThanOrEqual(fdsBefore);
      } finally {
        await rig.destroy();
      }
    }, 120_000);

    it.each([
      // As in the issue: one host, handshakes until it is refused.
      { attacker: "one address", sources: 1, full: false },
      // Enough addresses and handshakes to fill the whole table (every shard's share of it).
      { attacker: "eight addresses", sources: 8, full: true },
    ])(
      "lets a legitimate client in while an attacker from $attacker holds 40 kept-alive handshakes against --max-connections 20",
      async ({ sources, full }) => {
        const rig = await Rig.create({ mode: "tunnel", wanAttacker: true, startTunnel: false });
        try {
          const server = await rig.startServer(["--max-connections", "20"]);
          await rig.startEcho();
          const injector = await rig.startInjector("hold", [
            "--count",
            "40",
            "--concurrency",
            "4",
            "--source-base",
            "10.201.64.100",
            "--sources",
            String(sources),
            "--keepalive",
            "2000",
            "--duration",
            "60000",
          ]);
          const held = await injector.waitFor((l) => l.json?.event === "established", 30_000);
          const heldBefore = (await serverStats(rig)).connections;
          // Several keepalive rounds: the attacker's connections are kept, and older than any
          // grace a server may give a new connection before it counts as unused.
          await sleep(6_000);
          await rig.startClient();
          // The first datagrams open the client's connection (retrying if refused)...
          const knock = await rig.udpEcho({ count: 5, intervalMs: 200, waitMs: 8_000 });
          // ...then its flow must be echoed.
          const echo = await rig.udpEcho({ count: 100, intervalMs: 20, waitMs: 3_000 });
          const after = await serverStats(rig);
          injector.signal("SIGTERM");
          const holdResult = await rig.injectorResult(injector, 10_000);
          const fromClient = server
            .find(/connection opened/)
            .filter((l) => String(l.json?.peer).startsWith(`${ADDR.routerWan}:`)).length;
          console.log(`issue 17 defect 2 (attacker from ${sources} address(es)):`, {
            held: held.json,
            serverConnectionsWhileHeld: heldBefore,
            knock: { sent: knock.totalSent, received: knock.totalReceived },
            echo: { sent: echo.totalSent, received: echo.totalReceived },
            clientConnectionsOpened: fromClient,
            serverConnectionsAfter: after.connections,
            hold: holdResult,
            stackClosed: after.stack.closed,
            refusedFull: after.stack.refusedFull,
          });
          // The attacker completed handshakes and the server held them before the client came.
          expect(held.json?.established as number).toBeGreaterThanOrEqual(1);
          expect(heldBefore).toBe(held.json?.established);
          if (full) expect(heldBefore).toBe(20);
          // The legitimate client got in and its flow is echoed.
          expect(fromClient).toBeGreaterThanOrEqual(1);
          expect(echo.totalReceived).toBeGreaterThanOrEqual(95);
        } finally {
          await rig.destroy();
        }
      },
      120_000,
    );
  });
});
