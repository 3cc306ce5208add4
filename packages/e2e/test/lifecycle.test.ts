/**
 * The programs' nftables tables exist only while they run: removed at exit, and a table
 * left behind by a SIGKILL is replaced by the next start and removed at its exit.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { realDeviceGate } from "../../../test-support/netns.js";
import { destroyAllNamespaces } from "../src/namespace.js";
import { Rig } from "../src/rig.js";
import type { TunnelProgram } from "../src/tunnel.js";

const gate = realDeviceGate();

function nftTables(program: TunnelProgram): string {
  return program.ns.exec("nft", ["list", "tables"]);
}

describe.skipIf(gate.skip)("nft tables of the programs", () => {
  let rig: Rig;
  beforeAll(async () => {
    rig = await Rig.create({ mode: "tunnel" });
    await rig.startEcho();
  });
  afterAll(async () => {
    await rig?.destroy();
    destroyAllNamespaces();
  });

  it("are in place while the programs run and the tunnel works", async () => {
    expect(await rig.client!.hasNftTable()).toBe(true);
    expect(await rig.server!.hasNftTable()).toBe(true);
    expect((await rig.udpEcho({ count: 3 })).totalReceived).toBe(3);
  });

  for (const role of ["client", "server"] as const) {
    it(`${role}: gone after exit, and after SIGKILL followed by a restart and an exit`, async () => {
      const start = () => (role === "client" ? rig.startClient() : rig.startServer());
      const current = () => (role === "client" ? rig.client! : rig.server!);

      // A clean exit removes the table.
      const first = current();
      await first.stop();
      expect(first.exitStatus).toBe(0);
      expect(nftTables(first)).not.toContain("fake_tcp_");

      // SIGKILL leaves no chance to clean up; the next start must take over the stale table.
      const second = await start();
      expect(await second.hasNftTable()).toBe(true);
      second.signal("SIGKILL");
      await second.waitExit(5_000);
      const third = await start();
      expect(await third.hasNftTable()).toBe(true);
      expect((await rig.udpEcho({ count: 3, waitMs: 3_000 })).totalReceived).toBeGreaterThan(0);
      await third.stop();
      expect(third.exitStatus).toBe(0);
      expect(nftTables(third)).not.toContain("fake_tcp_");
      // Leave the rig running for the next case.
      await start();
    });
  }
});
