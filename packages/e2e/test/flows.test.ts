/**
 * One UDP flow spread over two fake-TCP connections (`--flows 2`), both ends with two shards,
 * through the NAT rig: WireGuard carries a checksummed 4 MiB TCP transfer, each connection
 * carries datagrams both ways, and the server relays the peer through one UDP socket. Then
 * the same with both programs keyed (the control messages carry the key's MAC).
 */
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { destroyAllNamespaces } from "../src/namespace.js";
import { SERVER_MAIN } from "../src/paths.js";
import { Rig } from "../src/rig.js";
import { tcpTransfer } from "../src/tcp-transfer.js";
import { withWireGuardThroughTunnel } from "../src/wireguard.js";

const gate = realDeviceGate();

type ShardCounters = Record<string, number>;

describe.skipIf(gate.skip).each([
  ["unkeyed", false],
  ["keyed", true],
])("one UDP flow over two connections (--flows 2), %s", (_name, keyed) => {
  let rig: Rig;
  const dir = mkdtempSync(join(tmpdir(), "e2e-flows-"));

  beforeAll(async () => {
    const keyArgs: string[] = [];
    if (keyed) {
      const keyFile = join(dir, "tunnel.key");
      writeFileSync(keyFile, execFileSync(process.execPath, [SERVER_MAIN, "genkey"]));
      chmodSync(keyFile, 0o600);
      keyArgs.push("--key-file", keyFile);
    }
    rig = await Rig.create({
      mode: "tunnel",
      clientArgs: ["--queues", "2", "--flows", "2", "--flow-rate", "0", ...keyArgs],
      serverArgs: ["--queues", "2", ...keyArgs],
    });
  });
  afterAll(async () => {
    await rig?.destroy();
    destroyAllNamespaces();
    rmSync(dir, { recursive: true, force: true });
  });

  it("carries a WireGuard transfer of 4 MiB over both connections, joined into one UDP socket", async () => {
    await withWireGuardThroughTunnel(rig, async (wg) => {
      const ping = await rig.ping(rig.a, wg.b.address, 5);
      expect(ping.received).toBeGreaterThanOrEqual(4);
      const { sent, received } = await tcpTransfer(rig.a, rig.b, {
        address: wg.b.address,
        port: 5001,
        bytes: 4 << 20,
        timeoutMs: 60_000,
      });
      expect(sent.bytes).toBe(4 << 20);
      expect(received.bytes).toBe(sent.bytes);
      expect(received.sha256).toBe(sent.sha256);

      const client = await rig.client!.requestStats();
      const server = await rig.server!.requestStats();
      console.log("flows stats:", JSON.stringify({ client, server }));
      // The client: the peer's shard owns the group, the other shard hosts the member, and
      // each carried datagrams both ways (its own counters).
      expect(client.flowGroups).toBe(1);
      expect(client.flowMembers).toBe(1);
      expect(client.flowJoins).toBe(1);
      const shards = client.shards as ShardCounters[];
      expect(shards).toHaveLength(2);
      for (const shard of shards) {
        expect(shard.udpToTunnel).toBeGreaterThan(100);
        expect(shard.tunnelToUdp).toBeGreaterThan(100);
      }
      // The server: two connections, one group, one UDP socket towards WireGuard.
      expect(server.connections).toBe(2);
      expect(server.flowGroups).toBe(1);
      expect(server.flowMembers).toBe(1);
      expect(server.udpSockets).toBe(1);
      expect(server.flowJoinsRefused).toBe(0);
      expect(server.flowControlDropped).toBe(0);
      const serverShards = server.shards as ShardCounters[];
      expect(serverShards.map((s) => s.connections).sort()).toEqual([1, 1]);
    });
  }, 120_000);
});
