/**
 * worker_threads: a queue attached, read and written inside a worker; the worker ends by
 * itself once its queue is closed, a terminated worker's queue is closed by the env cleanup
 * hook, and no fd is left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupAll, Netns, realDeviceGate } from "../../../test-support/netns.js";
import { Agent } from "./agent.js";
import { parsePacket, udpPacket } from "./packets.js";

const gate = realDeviceGate();
const V4 = { local: "10.203.0.1", peer: "10.203.0.2" };

describe.skipIf(gate.skip)("TUN queue in a worker_thread (real device in a namespace)", () => {
  let ns: Netns;
  let agent: Agent;

  beforeAll(async () => {
    ns = new Netns("fttwk");
    ({ agent } = await Agent.start(ns, { name: "ftwk0", multiQueue: true, ipv4: V4 }));
  });
  afterAll(async () => {
    await agent?.close().catch(() => {});
    cleanupAll();
  });

  it("reads and writes from a worker, which then exits cleanly without leaking fds", async () => {
    await agent.request("udpBind", { family: 4, addr: V4.local, port: 6100 });
    const before = await agent.request("fdCounts");
    expect(before.tun).toBe(1);
    const ready = await agent.request("workerStart", {});
    expect(ready.fd).toBeGreaterThan(2);
    // Leave the worker's queue as the only one, so the kernel must deliver to it.
    await agent.request("closeQueue", { q: 0 });
    expect((await agent.request("fdCounts")).tun).toBe(1);

    await agent.request("udpSend", {
      family: 4,
      addr: V4.peer,
      port: 6200,
      srcPort: 6201,
      hex: Buffer.from("to-the-worker").toString("hex"),
    });
    const got = await agent.waitFor(
      (e) => {
        if (e.ev !== "worker" || e.msg.ev !== "pkt") return false;
        const p = parsePacket(Buffer.from(e.msg.hex, "hex"));
        return p?.proto === 17 && p.dport === 6200;
      },
      5_000,
      "packet read in the worker",
    );
    expect(parsePacket(Buffer.from(got.msg.hex, "hex"))!.l4.subarray(8).toString()).toBe(
      "to-the-worker",
    );

    const packet = udpPacket(V4.peer, 6300, V4.local, 6100, Buffer.from("from-the-worker"));
    await agent.request("workerSend", { msg: { op: "write", hex: packet.toString("hex") } });
    const wrote = await agent.waitFor(
      (e) => e.ev === "worker" && e.msg.ev === "wrote",
      5_000,
      "write",
    );
    expect(wrote.msg.ok).toBe(true);
    await agent.waitFor(
      (e) => e.ev === "udp" && e.hex === Buffer.from("from-the-worker").toString("hex"),
      5_000,
      "datagram written by the worker",
    );

    await agent.request("workerSend", { msg: { op: "stop" } });
    const stopped = await agent.waitFor(
      (e) => e.ev === "worker" && e.msg.ev === "stopped",
      5_000,
      "stop",
    );
    expect(stopped.msg.fd).toBe(-1);
    expect(stopped.msg.stats.packetsRead).toBeGreaterThanOrEqual(1);
    expect(stopped.msg.stats.packetsWritten).toBe(1);
    const exit = await agent.waitFor((e) => e.ev === "workerExit", 10_000, "worker exit");
    expect(exit.code).toBe(0);

    const after = await agent.request("fdCounts");
    expect(after.tun).toBe(0);
    expect(after.total).toBe(before.total - 1); // only the device's own queue is gone
    // The device went away with its last queue.
    expect(() => ns.exec("ip", ["link", "show", "ftwk0"])).toThrow();
  });
});

describe.skipIf(gate.skip)("terminating a worker with an open, polling queue", () => {
  let ns: Netns;
  let agent: Agent;

  beforeAll(async () => {
    ns = new Netns("fttwt");
    ({ agent } = await Agent.start(ns, { name: "ftwt0", multiQueue: true, ipv4: V4 }));
  });
  afterAll(async () => {
    await agent?.close().catch(() => {});
    cleanupAll();
  });

  it("closes the queue in the env cleanup hook: no abort, no leaked fd", async () => {
    const before = await agent.request("fdCounts");
    await agent.request("workerStart", {});
    expect((await agent.request("fdCounts")).tun).toBe(2);
    await agent.request("workerSend", { msg: { op: "abandon" } });
    await agent.waitFor((e) => e.ev === "worker" && e.msg.ev === "abandoning", 5_000, "abandon");
    const code = await agent.request("workerTerminate", {}, 10_000);
    expect(code).toBe(1); // terminate()'s documented exit code
    const after = await agent.request("fdCounts");
    expect(after.tun).toBe(1);
    expect(after.total).toBe(before.total);
    expect(agent.child.exitCode).toBeNull(); // the process did not abort
  });
});

describe.skipIf(gate.skip)(
  "process exit with queues still polling in the main thread and a worker",
  () => {
    let ns: Netns;

    beforeAll(() => {
      ns = new Netns("fttwx");
    });
    afterAll(() => cleanupAll());

    it("exits with the requested code, without an abort or a hang", async () => {
      const { agent } = await Agent.start(ns, { name: "ftwx0", multiQueue: true, ipv4: V4 });
      await agent.request("workerStart", {});
      const exited = new Promise<number | null>((resolve) => agent.child.once("exit", resolve));
      await agent.request("exitNow");
      const code = await Promise.race([
        exited,
        new Promise<string>((r) => setTimeout(() => r("hang"), 10_000)),
      ]);
      expect(code).toBe(7);
      expect(agent.stderr.join("")).toBe("");
      // Its queues closed with the process, so the device is gone.
      expect(() => ns.exec("ip", ["link", "show", "ftwx0"])).toThrow();
    });
  },
);
