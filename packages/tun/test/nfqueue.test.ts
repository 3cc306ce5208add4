/**
 * NfQueue on the real kernel, in a throw-away namespace: rules queue new SYNs to a port, a
 * queue program marks the ones that carry a marker option, the mark goes to the conntrack
 * entry and only marked connections are DNATed (to another address and port). Clients are
 * the far end of a TUN device in the namespace (see fixtures/nfqueue-scenario.mjs), so their
 * SYNs enter through PREROUTING like a remote host's. IPv4 and IPv6; bypass when the program
 * is killed or closed; fail-open on a full queue; drop and deferred verdicts; malformed calls.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { type ScenarioReport as Report, runScenarioProgram } from "./scenario.js";

const gate = realDeviceGate();
const SCENARIO = fileURLToPath(new URL("./fixtures/nfqueue-scenario.mjs", import.meta.url));

const QUEUE = 7;
const MARK = 0x77;
const REAL_PORT = 4443;
const TUNNEL_PORT = 4444;
const TUNNEL_V4 = "10.77.1.1";
const TUNNEL_V6 = "fd00:77:1::1";
const ARGS = {
  queue: QUEUE,
  mark: MARK,
  realPort: REAL_PORT,
  tunnelPort: TUNNEL_PORT,
  tunnelV4: TUNNEL_V4,
  tunnelV6: TUNNEL_V6,
};

/** Runs one scenario in `ns` (optionally under a wrapper command) and returns its report. */
function runScenario(ns: Netns, name: string, prefix: string[] = []): Promise<Report> {
  const cmd = [...prefix, process.execPath, SCENARIO, name, JSON.stringify(ARGS)];
  return runScenarioProgram(ns, name, cmd, 45_000);
}

/**
 * Queues new SYNs to `port` to queue `queue` with bypass, at the mangle priority of
 * prerouting (before DNAT). The nft `queue` statement needs nft_queue (CONFIG_NFT_QUEUE);
 * kernels built without it (this project's CI kernel among them) still have the xtables
 * NFQUEUE target, reached through iptables-nft. Returns which one was used.
 */
function queueNewSyns(ns: Netns, port: number, queue: number): "nft" | "iptables-nft" {
  try {
    ns.exec("nft", ["-f", "-"], {
      input: `table inet ftnfq_queue {
  chain syn { type filter hook prerouting priority mangle; policy accept;
    tcp dport ${port} tcp flags & (fin | syn | rst | ack) == syn ct state new queue num ${queue} bypass
  }
}`,
    });
    return "nft";
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? error);
    if (!/No such file or directory|not supported/i.test(stderr)) throw error;
  }
  for (const tool of ["iptables-nft", "ip6tables-nft"]) {
    try {
      ns.exec(tool, [
        ...["-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "--dport", String(port), "--syn"],
        ...["-m", "conntrack", "--ctstate", "NEW"],
        ...["-j", "NFQUEUE", "--queue-num", String(queue), "--queue-bypass"],
      ]);
    } catch (error) {
      throw new Error(
        `this kernel has no nft queue statement (nft_queue) and ${tool} failed (install Debian's iptables package; scripts/setup.sh does): ${String(error)}`,
      );
    }
  }
  return "iptables-nft";
}

describe.skipIf(gate.skip)(
  "NfQueue (real kernel, namespace with queue + mark + DNAT rules)",
  () => {
    let ns: Netns;

    beforeAll(() => {
      ns = new Netns("fttnq");
      ns.exec("ip", ["addr", "add", `${TUNNEL_V4}/32`, "dev", "lo"]);
      ns.exec("ip", ["-6", "addr", "add", `${TUNNEL_V6}/128`, "dev", "lo", "nodad"]);
      // After the verdict: copy the packet mark to the connection, DNAT marked connections only.
      ns.exec("nft", ["-f", "-"], {
        input: `table inet ftnfq {
  chain copy_mark { type filter hook prerouting priority mangle + 10; policy accept;
    meta mark ${MARK} ct mark set meta mark
  }
  chain keyed_dnat { type nat hook prerouting priority dstnat; policy accept;
    ct mark ${MARK} meta nfproto ipv4 tcp dport ${REAL_PORT} dnat ip to ${TUNNEL_V4}:${TUNNEL_PORT}
    ct mark ${MARK} meta nfproto ipv6 tcp dport ${REAL_PORT} dnat ip6 to [${TUNNEL_V6}]:${TUNNEL_PORT}
  }
}`,
      });
      const how = queueNewSyns(ns, REAL_PORT, QUEUE);
      console.log(`nfqueue test: new SYNs queued with ${how}`);
    });
    afterAll(() => cleanupAll());

    it("marks keyed SYNs (-> conntrack mark -> DNAT to the tunnel); others reach the real service; IPv4 and IPv6", async () => {
      const r = await runScenario(ns, "share");
      expect(r.results).toHaveLength(8);
      for (const c of r.results) {
        expect(c.who, JSON.stringify(c)).toBe(c.keyed ? "tunnel" : "real");
        // The client sees the port it dialled either way (the DNAT is undone on replies).
        expect(c.synAckFrom).toBe(REAL_PORT);
      }
      // Only the SYNs were queued (one per connection, not the ACK or data), with their facts.
      expect(r.seen).toHaveLength(8);
      r.seen.forEach((p: Report, i: number) => {
        const family = i < 4 ? 4 : 6;
        const ipHeader = family === 4 ? 20 : 40;
        const tcpHeader = 24 + (r.results[i].keyed ? 8 : 0); // MSS (+ marker, padded)
        expect(p).toEqual({
          family,
          hook: 0, // prerouting
          ifindex: r.ifindex,
          length: ipHeader + tcpHeader,
          packetLength: ipHeader + tcpHeader,
          mark: 0,
          keyed: r.results[i].keyed,
        });
      });
      expect(r.stats).toMatchObject({
        packets: 8,
        accepted: 8,
        dropped: 0,
        marked: 4,
        held: 0,
        sendErrors: 0,
        kernelErrors: 0,
        truncated: 0,
        malformed: 0,
      });
    });

    it("reads a burst of held SYNs in one batch: each packet's bytes, family and verdict are its own", async () => {
      const r = await runScenario(ns, "burst");
      expect(r.maxBatch).toBeGreaterThan(1);
      expect(r.seen).toHaveLength(r.results.length);
      for (const c of r.results) {
        expect(c.who, JSON.stringify(c)).toBe(c.keyed ? "tunnel" : "real");
        const p = r.seen.find((s: Report) => s.sport === c.sport);
        expect(p, `SYN from port ${c.sport} seen`).toEqual({
          sport: c.sport,
          family: c.family,
          version: c.family,
          keyed: c.keyed,
        });
      }
      // Mixed decisions: answered packet by packet (no "every id up to N" message for them).
      expect(r.stats).toMatchObject({ packets: 12, marked: 4, accepted: 12, kernelErrors: 0 });
    });

    it("keeps the port working without the queue program: SIGKILLed or closed, traffic bypasses to the real service", async () => {
      const r = await runScenario(ns, "bypass");
      expect(r.holderReady).toBe(true);
      expect(r.whileAlive.map((c: Report) => c.who)).toEqual(["tunnel", "tunnel"]);
      expect(r.afterKill.map((c: Report) => c.who)).toEqual(["real", "real", "real"]);
      expect(r.whileOpen.map((c: Report) => c.who)).toEqual(["tunnel"]);
      expect(r.afterClose.map((c: Report) => c.who)).toEqual(["real", "real"]);
    });

    it("fails open: with the queue full (maxLength 1, one SYN held), the next SYN goes through unmarked; the held one is settled by id", async () => {
      const r = await runScenario(ns, "failopen");
      expect(r.heldCount).toBe(1);
      expect(r.statsHeld).toMatchObject({ packets: 1, held: 1, accepted: 0 });
      expect(r.second.who).toBe("real"); // never reached the program: accepted by the kernel
      expect(r.accepted).toBe(true);
      expect(r.first.who).toBe("tunnel"); // released late with the mark
      expect(r.stats).toMatchObject({ packets: 1, held: 0, accepted: 1, marked: 1 });
    });

    it("drops on a drop verdict; malformed verdict calls and options throw with a code; nothing crashes", async () => {
      const r = await runScenario(ns, "misuse");
      const e = r.errors;
      for (const key of [
        "indexTooLarge",
        "indexNegative",
        "indexFraction",
        "indexString",
        "markNegative",
        "markTooLarge",
        "markFraction",
        "markNaN",
        "staleBatch",
        "badId",
        "nanId",
        "badMarkById",
      ])
        expect(e[key], key).toBe("ERR_OUT_OF_RANGE");
      expect(e.dropped.who).toBe("none"); // dropped SYN: no SYN-ACK
      expect(e.unknownId).toBe("ERR_NFQUEUE_UNKNOWN_PACKET");
      expect(e.goodDeferred).toBe("no error");
      expect(e.secondVerdict).toBe("ERR_NFQUEUE_UNKNOWN_PACKET");
      expect(e.deferredResult.who).toBe("tunnel");
      expect(e.secondQueue).toBe("EPERM");
      expect(e.secondQueueMessage).toMatch(/queue 7 is already bound by another program/);
      // V8 refuses a foreign receiver itself ("Illegal invocation"); the addon checks again.
      expect(e.wrongThisPlain).toMatch(/ERR_INVALID_THIS|TypeError: Illegal invocation/);
      expect(e.wrongThisUdp).toMatch(/ERR_INVALID_THIS|TypeError: Illegal invocation/);
      expect(e.badQueueNumber).toBe("EINVAL");
      expect(e.badCopy).toBe("ERANGE");
      expect(e.badBatch).toBe("ERANGE");
      expect(e.afterClose).toBe("ERR_NFQUEUE_CLOSED");
      expect(r.stats).toMatchObject({
        packets: 2,
        dropped: 1,
        accepted: 1,
        marked: 1,
        kernelErrors: 0,
      });
      expect(r.exitCode).toBe(0);
    });

    it("explains a missing CAP_NET_ADMIN (EPERM) and leaves nothing bound", async () => {
      const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find(existsSync);
      expect(setpriv, "setpriv (util-linux) is needed to drop privileges").toBeDefined();
      // Still uid 0, but with no capabilities at all.
      const r = await runScenario(ns, "unprivileged", [
        setpriv as string,
        "--bounding-set=-all",
        "--inh-caps=-all",
      ]);
      expect(r.code).toBe("EPERM");
      expect(r.message).toMatch(/cannot open netfilter queue 7: missing CAP_NET_ADMIN/);
      expect(r.bound).toBe(false);
    });
  },
);
