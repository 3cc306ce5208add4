/**
 * Issue 18: keepalive and dead-peer detection against phantun-shaped peers (which never
 * answer a probe, and whose 128 MiB ACK rule answers an old-seq segment once by wrap-around)
 * and between two stacks of ours. With a phantun peer, one-way flows each way and idle spells
 * longer than three keepalive intervals plus the detection time close nothing and lose
 * nothing; between two stacks of ours, a peer that goes silent is still detected.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { type Socket, Stack, type StackOptions } from "../src/index.js";
import { createMemoryPair, type PhantunConnection, PhantunPeer } from "../src/testing/index.js";
import { CLIENT4, SERVER4, twoStacks } from "./helpers.js";

const KEEPALIVE_MS = 1000;
const DEAD_PEER_PROBES = 3;
/** Our detection time for a silent peer of ours: the interval, then probes half an interval apart. */
const DETECTION_MS = KEEPALIVE_MS * (1 + DEAD_PEER_PROBES / 2);
/** Every phase outlasts three keepalive intervals plus the detection time. */
const PHASE_MS = 3 * KEEPALIVE_MS + DETECTION_MS + 1_500;
const INTERVAL_MS = 50;

const live: Partial<StackOptions> = {
  keepaliveIntervalMs: KEEPALIVE_MS,
  deadPeerProbes: DEAD_PEER_PROBES,
};

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
  vi.useRealTimers();
});

/** Our stack on side A, a phantun-shaped peer on side B, connected in the given pairing. */
async function withPhantun(phantun: "server" | "client", unackedLimit?: number) {
  const pair = createMemoryPair();
  const stack = new Stack({ queues: pair.a, local4: CLIENT4, ...live });
  const peer = new PhantunPeer({ queue: pair.b[0], local4: SERVER4, unackedLimit });
  cleanup.push(() => {
    peer.close();
    stack.close();
  });
  let ours: Socket;
  let theirs: PhantunConnection;
  if (phantun === "server") {
    peer.listen(4567);
    [ours, theirs] = await Promise.all([stack.connect(`${SERVER4}:4567`), peer.accept()]);
  } else {
    stack.listen(4567);
    // The peer plays the client from SERVER4 towards our stack at CLIENT4.
    [theirs, ours] = await Promise.all([peer.connect(`${CLIENT4}:4567`), stack.accept()]);
  }
  const atOurs: number[] = [];
  const atTheirs: number[] = [];
  ours.onDatagram((d) => atOurs.push(d.readUInt32BE(0)));
  theirs.onDatagram((d) => atTheirs.push(d.readUInt32BE(0)));
  return { pair, stack, peer, ours, theirs, atOurs, atTheirs };
}

/** Sends numbered datagrams every INTERVAL_MS for PHASE_MS from `send`. */
async function oneWay(send: (d: Buffer) => boolean, size = 200): Promise<number[]> {
  const sent: number[] = [];
  for (let i = 0; i < PHASE_MS / INTERVAL_MS; i++) {
    const d = Buffer.alloc(size);
    d.writeUInt32BE(i, 0);
    if (send(d)) sent.push(i);
    await vi.advanceTimersByTimeAsync(INTERVAL_MS);
  }
  return sent;
}

describe("a phantun-shaped peer: keepalives, no detection, nothing closed or lost", () => {
  for (const phantun of ["server", "client"] as const) {
    it(`our ${phantun === "server" ? "client" : "server"} with a phantun ${phantun}: up, down, idle, up again`, async () => {
      vi.useFakeTimers();
      const t = await withPhantun(phantun);
      expect(t.ours.peerIsOurs).toBe(false);
      const up = await oneWay((d) => t.ours.send(d));
      expect(t.atTheirs).toEqual(up);
      const down = await oneWay((d) => t.theirs.send(d));
      expect(t.atOurs).toEqual(down);
      await vi.advanceTimersByTimeAsync(PHASE_MS); // idle
      const again = await oneWay((d) => t.ours.send(d));
      expect(t.atTheirs).toEqual([...up, ...again]);
      expect(up.length).toBe(PHASE_MS / INTERVAL_MS);
      expect(t.ours.closed).toBe(false);
      expect(t.theirs.closed).toBe(false);
      // Keepalives went out while nothing came back; never a probe, never a challenge.
      expect(t.ours.counters.keepalivesSent).toBeGreaterThanOrEqual(3);
      expect(t.ours.counters.probesSent).toBe(0);
      const st = t.stack.stats();
      expect(st).toMatchObject({ outOfWindow: 0, badAck: 0, challengeAcks: 0 });
      expect(Object.values(st.closed).every((n) => n === 0)).toBe(true);
      // Our keepalives carry our next seq: nothing old for its ACK rule to answer, except our
      // client's first, which draws one segment from a phantun server for conntrack's sake.
      expect(t.theirs.counters.wrapAcksSent).toBe(phantun === "server" ? 1 : 0);
    });
  }

  it("its 128 MiB ACK rule (scaled down to 4 KiB here) fires all the time: still nothing closed or lost", async () => {
    vi.useFakeTimers();
    const t = await withPhantun("server", 4096);
    const up = await oneWay((d) => t.ours.send(d), 1000);
    const down = await oneWay((d) => t.theirs.send(d), 1000);
    await vi.advanceTimersByTimeAsync(PHASE_MS);
    expect(t.atTheirs).toEqual(up);
    expect(t.atOurs).toEqual(down);
    expect(t.theirs.counters.pureAcksSent).toBeGreaterThan(20);
    expect(t.ours.closed || t.theirs.closed).toBe(false);
    expect(t.stack.stats()).toMatchObject({ outOfWindow: 0, badAck: 0 });
  });

  it("a phantun peer that goes away silently is closed only by the idle timeout", async () => {
    vi.useFakeTimers();
    const t = await withPhantun("server");
    t.pair.bToA.filter = () => false;
    t.pair.aToB.filter = () => false;
    const closed = new Promise<string>((r) => t.ours.once("close", (i) => r(i.cause)));
    await vi.advanceTimersByTimeAsync(170_000);
    expect(t.ours.closed).toBe(false);
    await vi.advanceTimersByTimeAsync(15_000);
    expect(await closed).toBe("idle-timeout");
  });
});

describe("two stacks of ours: a silent peer is still detected", () => {
  async function ourPair() {
    const t = twoStacks({ client: live, server: live });
    cleanup.push(t.close);
    t.server.listen(7000);
    const [c, s] = await Promise.all([t.client.connect(`${SERVER4}:7000`), t.server.accept()]);
    expect(c.peerIsOurs && s.peerIsOurs).toBe(true);
    const atC: number[] = [];
    const atS: number[] = [];
    c.onDatagram((d) => atC.push(d.readUInt32BE(0)));
    s.onDatagram((d) => atS.push(d.readUInt32BE(0)));
    return { ...t, c, s, atC, atS };
  }

  function closedAt(sock: Socket): Promise<{ cause: string; at: number }> {
    return new Promise((r) => sock.once("close", (i) => r({ cause: i.cause, at: Date.now() })));
  }

  for (const direction of ["up", "down"] as const) {
    it(`one-way flow ${direction}, then the server goes silent: the client declares it dead`, async () => {
      vi.useFakeTimers();
      const t = await ourPair();
      const flow =
        direction === "up" ? await oneWay((d) => t.c.send(d)) : await oneWay((d) => t.s.send(d));
      expect(direction === "up" ? t.atS : t.atC).toEqual(flow);
      expect(t.c.closed || t.s.closed).toBe(false);
      const closed = closedAt(t.c);
      t.pair.bToA.filter = () => false; // the server falls silent (crash, lost NAT mapping)
      const at = Date.now();
      // The client keeps sending: a busy flow must still notice.
      for (let i = 0; i < 100 && !t.c.closed; i++) {
        t.c.send(Buffer.alloc(200));
        await vi.advanceTimersByTimeAsync(INTERVAL_MS);
      }
      const r = await closed;
      expect(r.cause).toBe("dead-peer");
      // The interval, the probes, and up to one sweep period (500 ms) of slack.
      expect(r.at - at).toBeLessThanOrEqual(DETECTION_MS + 500);
    });
  }

  it("the client goes silent: the server declares it dead too", async () => {
    vi.useFakeTimers();
    const t = await ourPair();
    await oneWay((d) => t.s.send(d));
    const closed = closedAt(t.s);
    t.pair.aToB.filter = () => false;
    const at = Date.now();
    await vi.advanceTimersByTimeAsync(2 * DETECTION_MS);
    const r = await closed;
    expect(r.cause).toBe("dead-peer");
    expect(r.at - at).toBeLessThanOrEqual(DETECTION_MS + 500);
  });
});
