/**
 * The client's host rules carry the tunnel without conntrack, over IPv4 and IPv6: the built
 * client in one namespace and the built server in another, linked directly. The datagrams are
 * echoed; the client's egress map names the host's address towards the server, its flow set
 * holds the connection (with a source port outside the host's ephemeral range), the client
 * host's conntrack holds no entry of the tunnel, and its own TCP sent no RST.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, linkNamespaces, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { startUdpEcho, udpPing } from "../../../test-support/udp-scripts.js";
import { RunningProgram } from "../../common/test/program-harness.js";

const gate = realDeviceGate();

/** The kernel's TCP RSTs sent from `ns` (`OutRsts` of /proc/net/snmp). */
function tcpResets(ns: Netns): number {
  const [names, values] = ns
    .exec("cat", ["/proc/net/snmp"])
    .split("\n")
    .filter((l) => l.startsWith("Tcp:"))
    .map((l) => l.split(/\s+/));
  return Number(values[names.indexOf("OutRsts")]);
}

describe.skipIf(gate.skip)("the client's host rules, both families", () => {
  let nsC: Netns;
  let nsS: Netns;
  let server: RunningProgram;

  beforeAll(async () => {
    nsC = new Netns("ftch");
    nsS = new Netns("ftch");
    linkNamespaces(nsC, "10.79.0.1/24", nsS, "10.79.0.2/24");
    nsC.exec("ip", ["-6", "addr", "add", "fd79::1/64", "dev", "veth0", "nodad"]);
    nsS.exec("ip", ["-6", "addr", "add", "fd79::2/64", "dev", "veth1", "nodad"]);
    await startUdpEcho(nsS, 7777);
    server = new RunningProgram(nsS, "server", [
      "--listen",
      "4567",
      "--remote",
      "127.0.0.1:7777",
      "--tun",
      "ftchs0",
    ]);
    await server.waitFor("fake-tcp-server running");
  });
  afterAll(async () => {
    await server?.stop();
    cleanupAll();
  });

  it.each([
    { family: 4, server: "10.79.0.2", remote: "10.79.0.2:4567", source: "10.79.0.1" },
    { family: 6, server: "fd79::2", remote: "[fd79::2]:4567", source: "fd79::1" },
  ])(
    "IPv$family: echoed through untracked, rewritten segments; the host's TCP silent",
    async ({ family, server: serverAddr, remote, source }) => {
      const resetsBefore = tcpResets(nsC);
      const client = new RunningProgram(nsC, "client", [
        "--local",
        "1234",
        "--remote",
        remote,
        "--tun",
        "ftchc0",
      ]);
      try {
        await client.waitFor("fake-tcp-client running");
        const count = 50;
        expect(await udpPing(nsC, 1234, count, { bytes: 200, timeoutMs: 20_000 })).toBe(count);

        const table = (what: string) =>
          nsC.exec("nft", [
            "list",
            what === "egress" ? "map" : "set",
            "inet",
            "fake_tcp_ftchc0",
            `${what}${family}`,
          ]);
        // The host's address towards the server, as the routing table gives it.
        expect(table("egress")).toContain(`${serverAddr} : ${source}`);
        // The connection's flow, from a port outside Linux's default ephemeral range.
        const flow = new RegExp(`${serverAddr.replaceAll(".", "\\.")} \\. 4567 \\. (\\d+)`).exec(
          table("flows"),
        );
        expect(flow).not.toBeNull();
        const port = Number(flow![1]);
        expect(port).toBeGreaterThanOrEqual(1024);
        expect(port).toBeLessThan(32768);
        // Nothing of the tunnel in the client host's conntrack; its own TCP sent no RST.
        const tracked = nsC.exec("conntrack", [
          "-L",
          "-p",
          "tcp",
          "-f",
          family === 4 ? "ipv4" : "ipv6",
        ]);
        expect(tracked).not.toContain("dport=4567");
        expect(tcpResets(nsC)).toBe(resetsBefore);
      } finally {
        expect((await client.stop()).code).toBe(0);
      }
    },
    60_000,
  );
});
