/**
 * The handshake gate in a client shard's sessions: many new peers at once, and only the bound
 * of them connecting; the rest queue their datagrams and wait their turn, and a peer closed
 * while waiting never connects. The stack is a fake whose handshakes end when the test says.
 */
import { newRelayCounters, type Tunnel, type TunnelSocket } from "fake-tcp-common";
import { RecordingSocket } from "fake-tcp-common/testing";
import { describe, expect, it } from "vitest";
import { parseClientArgs } from "../src/cli.js";
import { HandshakeGate } from "../src/handshake-gate.js";
import { MAX_QUEUED_DATAGRAMS, type PeerSession } from "../src/peer-session.js";
import { PeerTable } from "../src/peer-table.js";
import { ShardSessions } from "../src/shard-sessions.js";

const PEERS = 50;
const BOUND = 8;

/** A stack whose connects wait until the test settles them, in the order they were made. */
function fakeTunnel() {
  const pending: {
    resolve: (sock: TunnelSocket) => void;
    reject: (err: unknown) => void;
  }[] = [];
  const tunnel: Tunnel = {
    name: "hgfake",
    mtu: 1500,
    connect: () =>
      new Promise<TunnelSocket>((resolve, reject) => pending.push({ resolve, reject })),
    listen: () => {},
    flush: () => {},
    onReceiveEnd: () => {},
    stats: () => ({}),
    close: () => {},
  };
  return { tunnel, pending };
}

/** Lets the sessions' connect chains (name resolution, then the stack) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

function timedOut(): Error {
  return Object.assign(new Error("no answer after 3 attempts"), { code: "ETIMEDOUT" });
}

describe("ShardSessions with a handshake gate", () => {
  it("connects at most the bound of many new peers at once; closed waiters never connect", async () => {
    const config = parseClientArgs(["--local", "1234", "--remote", "10.9.9.9:4567"], {});
    if (config === null) throw new Error("no config");
    const { tunnel, pending } = fakeTunnel();
    const peers = new PeerTable({
      maxConnections: 10_000,
      idleTimeoutMs: 180_000,
      newPeerRate: 10_000,
      newPeerBurst: 10_000,
      now: Date.now(),
    });
    const sessions = new ShardSessions({
      config,
      tunnel,
      peers,
      handshakePacket: undefined,
      shards: 1,
      logger: { info: () => {}, warn: () => {}, error: () => {} } as never,
      totals: newRelayCounters(),
      gate: new HandshakeGate({ initial: BOUND, min: BOUND, max: BOUND }),
    });
    const via = { sendTo: () => {} };
    const all: PeerSession[] = [];
    for (let i = 0; i < PEERS; i++) {
      const session = sessions.open({ address: "127.0.0.1", port: 20_000 + i, family: 4 }, via);
      if (session === undefined) throw new Error("refused");
      session.fromPeer(Buffer.from(`first ${i}`), via);
      all.push(session);
    }
    await settle();
    expect(pending.length).toBe(BOUND);
    expect(sessions.stats(0)).toMatchObject({
      handshakesInFlight: BOUND,
      handshakesWaiting: PEERS - BOUND,
      handshakesQueued: PEERS - BOUND,
    });

    // A waiting peer's datagrams are queued, up to the bound, the rest dropped and counted.
    const last = all[PEERS - 1];
    for (let i = 1; i < MAX_QUEUED_DATAGRAMS + 2; i++) last.fromPeer(Buffer.from(`d${i}`), via);
    expect(sessions.totals.queueDrops).toBe(2);

    // Peers closed (evicted) while waiting leave the queue.
    const evicted = all.slice(BOUND, BOUND + 10);
    for (const session of evicted) session.close("evicted");
    expect(sessions.stats(0)).toMatchObject({ handshakesWaiting: PEERS - BOUND - 10 });

    // The first handshakes end (some complete, some time out): as many start as ended, never more.
    const opened: RecordingSocket[] = [];
    for (let i = 0; i < BOUND; i++) {
      const { resolve, reject } = pending[i];
      if (i % 2 === 0) {
        const sock = new RecordingSocket();
        opened.push(sock);
        resolve(sock);
      } else reject(timedOut());
    }
    await settle();
    expect(pending.length).toBe(2 * BOUND);
    expect(sessions.stats(0)).toMatchObject({ handshakesInFlight: BOUND });
    // The next in line are those after the evicted ones.
    for (const session of evicted)
      expect(session.isClosed && session.socket === undefined).toBe(true);
    expect(all.slice(0, BOUND).filter((s) => s.isOpen).length).toBe(BOUND / 2);

    // The rest, a round at a time: never more than the bound at once, every live peer served.
    for (let round = 0; round < PEERS && pending.length < PEERS - 10; round++) {
      const from = pending.length - sessions.gate.counters.handshakesInFlight;
      for (let i = from; i < pending.length; i++) pending[i].resolve(new RecordingSocket());
      await settle();
      expect(sessions.gate.counters.handshakesInFlight).toBeLessThanOrEqual(BOUND);
    }
    for (
      let i = pending.length - sessions.gate.counters.handshakesInFlight;
      i < pending.length;
      i++
    )
      pending[i].resolve(new RecordingSocket());
    await settle();
    // Each live peer connected once; the evicted ones never.
    expect(pending.length).toBe(PEERS - 10);
    expect(sessions.stats(0)).toMatchObject({
      handshakesInFlight: 0,
      handshakesWaiting: 0,
      opened: PEERS - 10 - BOUND / 2,
      failed: BOUND / 2,
    });
    // The last peer's queue went out once it connected.
    expect(last.isOpen).toBe(true);
    sessions.closeAll();
  });
});
