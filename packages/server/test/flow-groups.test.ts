/**
 * Flow groups end to end in one process: two client shards and two server shards (a stack
 * each, on an in-memory device pair with two queues: a connection opened by client shard i
 * reaches server shard i), their meshes joined by MessageChannels, the server's relays on
 * loopback UDP towards a recording application. The client side is driven by its group logic
 * directly (flow-group.ts), as a peer session would.
 *
 * Checked: OPEN/JOIN make one group with one UDP socket; datagrams spread over both
 * connections both ways and all arrive, from one source port; the reorder depth they arrive
 * with; a forged or late JOIN is refused (reset) and changes nothing for the group; losing a
 * member, then the first connection, keeps the peer carried while the lost flow comes back;
 * traffic on members only (the first connection lost) keeps the client's session in its peer
 * table and the server's group past their idle timeouts, in either direction.
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { MessageChannel } from "node:worker_threads";
import { Stack } from "fake-tcp";
import { createMemoryPair } from "fake-tcp/testing";
import {
  encodeFlowMessage,
  FlowMessageType,
  isFlowControl,
  newRelayCounters,
  reorderDepth,
  ShardMesh,
  type TunnelSocket,
  UdpRunWriter,
  udpCounting,
} from "fake-tcp-common";
import { afterEach, describe, expect, it } from "vitest";
import { ClientFlows, type SpreadGroup } from "../../client/src/flow-group.js";
import {
  PeerSession,
  type ReplySocket,
  type SessionContext,
} from "../../client/src/peer-session.js";
import { PeerTable } from "../../client/src/peer-table.js";
import { ServerFlows } from "../src/flow-groups.js";
import type { Relay } from "../src/relay.js";
import { RelayTable } from "../src/relay-table.js";

const CLIENT4 = "192.168.200.2";
const SERVER4 = "192.168.201.2";
const PORT = 4567;
const SERVER = { address: SERVER4, port: PORT, family: 4 as const };
const PEER = { address: "127.0.0.9", port: 5555, family: 4 as const };
/** How often the client's members report their traffic to the owner (see flow-group.ts). */
const ACTIVITY_MS = 100;

async function until(check: () => boolean, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

function meshes(): [ShardMesh, ShardMesh] {
  const { port1, port2 } = new MessageChannel();
  return [new ShardMesh(0, [null, port1]), new ShardMesh(1, [port2, null])];
}

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {} };

/** `idleTimeoutMs`: of every stack (default the stack's, 180 s). */
async function rig(key?: Uint8Array, idleTimeoutMs?: number) {
  const pair = createMemoryPair({ queues: 2 });
  const app: Socket = createSocket("udp4");
  const atApp: { seq: number; from: number }[] = [];
  let appPeer: RemoteInfo | undefined;
  app.on("message", (m, r) => {
    atApp.push({ seq: m.readUInt32BE(0), from: r.port });
    appPeer = r;
  });
  await new Promise<void>((r) => app.bind(0, "127.0.0.1", () => r()));
  const remote = { address: "127.0.0.1", port: app.address().port, family: 4 as const };

  const serverMeshes = meshes();
  const servers = [0, 1].map((i) => {
    const stack = new Stack({ queues: [pair.b[i]], local4: SERVER4, idleTimeoutMs });
    const runs = new UdpRunWriter();
    const relays = new RelayTable({
      remote,
      runs,
      flushTunnel: () => stack.flush(),
      maxDatagramBytes: 1500,
      logger: quiet,
    });
    const flows = new ServerFlows({
      mesh: serverMeshes[i],
      key,
      totals: relays.totals,
      runs,
      counting: udpCounting(relays.totals),
      flushTunnel: () => stack.flush(),
    });
    relays.useFlows(flows);
    stack.onReceiveEnd(() => {
      flows.endTunnelBatch();
      runs.flush();
    });
    stack.listen(PORT);
    const accepted: Relay[] = [];
    void (async () => {
      for await (const sock of stack) {
        const relay = relays.accept(sock);
        if (relay) accepted.push(relay);
      }
    })().catch(() => {});
    return { stack, relays, flows, accepted };
  });

  const clientMeshes = meshes();
  const toPeer: number[][] = [[], []];
  const clients = [0, 1].map((i) => {
    const stack = new Stack({ queues: [pair.a[i]], local4: CLIENT4, idleTimeoutMs });
    const totals = newRelayCounters();
    const via: ReplySocket = {
      sendTo: (datagram) => toPeer[i].push(Buffer.from(datagram).readUInt32BE(0)),
      listen: 0,
    };
    const flows = new ClientFlows({
      mesh: clientMeshes[i],
      key,
      flows: 2,
      totals,
      connect: (target) => stack.connect(target),
      replyVia: () => via,
      flushTunnel: () => stack.flush(),
      activityMs: ACTIVITY_MS,
    });
    return { stack, flows, totals, via };
  });

  /** The peer's first connection and its group, as a peer session sets them up. */
  async function spreadPeer(): Promise<{ first: TunnelSocket; group: SpreadGroup }> {
    const first = await clients[0].stack.connect(SERVER);
    let group: SpreadGroup | undefined;
    first.onDatagram((view) => {
      if (isFlowControl(view)) group?.control(view);
      else toPeer[0].push(Buffer.from(view).readUInt32BE(0));
    });
    group = clients[0].flows.startGroup(first, { address: PEER, record: undefined, listen: 0 });
    return { first, group };
  }

  /** `count` datagrams from the peer, numbered from `from`, in UDP batches of `batch`. */
  async function send(group: SpreadGroup, from: number, count: number, batch = 8) {
    const datagram = Buffer.alloc(200);
    for (let seq = from; seq < from + count; seq++) {
      datagram.writeUInt32BE(seq, 0);
      group.send(datagram);
      if ((seq - from + 1) % batch === 0 || seq === from + count - 1) {
        clients[0].flows.endBatch();
        clients[0].stack.flush();
        await new Promise((r) => setImmediate(r));
      }
    }
  }

  /** `count` datagrams from the application to the peer, numbered from `from`. */
  async function reply(from: number, count: number) {
    for (let seq = from; seq < from + count; seq++) {
      const datagram = Buffer.alloc(100);
      datagram.writeUInt32BE(seq, 0);
      app.send(datagram, appPeer!.port, appPeer!.address);
      if (seq % 4 === 3) await new Promise((r) => setTimeout(r, 1));
    }
  }

  const close = () => {
    for (const c of clients) {
      c.flows.closeAll();
      c.stack.close();
    }
    for (const s of servers) {
      s.relays.closeAll();
      s.stack.close();
    }
    for (const m of [...serverMeshes, ...clientMeshes]) m.close();
    app.close();
  };
  return { pair, app, atApp, toPeer, servers, clients, spreadPeer, send, reply, close };
}

type Rig = Awaited<ReturnType<typeof rig>>;
let current: Rig | undefined;
/** A rig that afterEach removes. */
async function started(key?: Uint8Array, idleTimeoutMs?: number): Promise<Rig> {
  current = await rig(key, idleTimeoutMs);
  return current;
}
afterEach(() => {
  current?.close();
  current = undefined;
});

const serverStats = (r: Rig) => r.servers.map((s) => s.relays.stats() as Record<string, number>);

describe("flow groups over an in-memory pair", () => {
  for (const keyed of [false, true]) {
    it(`joins two connections into one UDP socket and spreads both ways${keyed ? " (keyed control messages)" : ""}`, async () => {
      const key = keyed ? new Uint8Array(32).fill(7) : undefined;
      const r = await started(key);
      const { first, group } = await r.spreadPeer();
      expect(first.peerIsOurs).toBe(true);
      await until(() => group.size === 2);
      expect(group.size).toBe(2);

      await r.send(group, 0, 400);
      await until(() => r.atApp.length === 400);
      expect(r.atApp).toHaveLength(400);
      // One source port at the application: one peer.
      expect(new Set(r.atApp.map((d) => d.from)).size).toBe(1);
      expect(new Set(r.atApp.map((d) => d.seq)).size).toBe(400);
      const depth = reorderDepth(r.atApp.map((d) => d.seq));
      console.log(`reorder depth, 400 datagrams in batches of 8 over 2 flows: ${depth}`);
      expect(depth).toBeLessThan(400);

      const [s0, s1] = serverStats(r);
      expect(s0.flowGroups + s1.flowGroups).toBe(1);
      expect(s0.flowMembers + s1.flowMembers).toBe(1);
      expect(s0.udpSockets + s1.udpSockets).toBe(1);
      // Both connections carried the peer's datagrams (each server shard relayed some).
      expect(s0.tunnelToUdp + s1.tunnelToUdp).toBe(400);
      expect(r.clients[0].totals.udpToTunnel).toBeGreaterThan(0);
      expect(r.clients[1].totals.udpToTunnel).toBeGreaterThan(0);

      await r.reply(0, 200);
      await until(() => r.toPeer[0].length + r.toPeer[1].length === 200);
      expect(r.toPeer[0].length + r.toPeer[1].length).toBe(200);
      expect(r.toPeer[0].length).toBeGreaterThan(0);
      expect(r.toPeer[1].length).toBeGreaterThan(0);
    });
  }

  it("refuses a join with a wrong secret, from a connection that carried data, or of an unknown group: reset, the group unchanged", async () => {
    const r = await started();
    const { group } = await r.spreadPeer();
    await until(() => group.size === 2);
    const refused = () => serverStats(r).reduce((n, s) => n + s.flowJoinsRefused, 0);

    const forged = async (token: { shard: number; group: number; secret: Uint8Array }) => {
      const sock = await r.clients[1].stack.connect(SERVER);
      let closed = false;
      sock.once("close", () => {
        closed = true;
      });
      sock.send(encodeFlowMessage({ type: FlowMessageType.Join, flow: 5, token }));
      r.clients[1].stack.flush();
      await until(() => closed);
      return closed;
    };
    // Guessed secrets, for the real group number and for another.
    expect(await forged({ shard: 0, group: 1, secret: new Uint8Array(8) })).toBe(true);
    expect(await forged({ shard: 1, group: 1, secret: new Uint8Array(8).fill(1) })).toBe(true);
    expect(await forged({ shard: 9, group: 1, secret: new Uint8Array(8) })).toBe(true);
    // A connection that already carried data cannot join afterwards.
    const used = await r.clients[1].stack.connect(SERVER);
    let usedClosed = false;
    used.once("close", () => {
      usedClosed = true;
    });
    used.send(Buffer.from("hello"));
    r.clients[1].stack.flush();
    await until(() => r.atApp.length === 1);
    used.send(
      encodeFlowMessage({
        type: FlowMessageType.Join,
        flow: 1,
        token: { shard: 0, group: 1, secret: new Uint8Array(8) },
      }),
    );
    r.clients[1].stack.flush();
    await until(() => usedClosed);
    expect(usedClosed).toBe(true);
    expect(refused()).toBe(4);

    // The group still carries everything over its two flows.
    r.atApp.length = 0;
    await r.send(group, 0, 100);
    await until(() => r.atApp.length >= 100);
    expect(r.atApp.filter((d) => d.seq < 100)).toHaveLength(100);
    expect(group.size).toBe(2);
    const stats = serverStats(r);
    expect(stats[0].flowGroups + stats[1].flowGroups).toBe(1);
  });

  it("loses a member, then the first connection: the other flow carries the peer while each comes back", async () => {
    const r = await started();
    const { first, group } = await r.spreadPeer();
    let ended = false;
    first.once("close", () => {
      const onEmpty = () => {
        ended = true;
      };
      if (!group.firstLost(onEmpty)) onEmpty();
    });
    await until(() => group.size === 2);
    const owner = r.servers[0].accepted[0];
    const member = r.servers[1].accepted[0];
    expect(owner.role.kind).toBe("owner");
    expect(member.role.kind).toBe("member");

    // The member's connection is reset by the server.
    member.close();
    await until(() => group.size === 1);
    await r.send(group, 0, 100);
    await until(() => r.atApp.length === 100);
    expect(r.atApp).toHaveLength(100);
    await until(() => group.size === 2, 5_000);
    expect(group.size).toBe(2);
    expect(r.clients[1].flows.counters.flowJoins).toBe(2);

    // Now the first connection is reset: the session goes on over the member.
    const appPort = r.atApp[0].from;
    owner.close();
    await until(() => group.size === 1);
    expect(ended).toBe(false);
    await r.send(group, 100, 100);
    await until(() => r.atApp.length === 200);
    expect(r.atApp).toHaveLength(200);
    // The first flow comes back as a member in the owner's shard; the application still sees
    // one UDP socket, the same one.
    await until(() => group.size === 2, 5_000);
    expect(group.size).toBe(2);
    await r.send(group, 200, 100);
    await until(() => r.atApp.length === 300);
    expect(new Set(r.atApp.map((d) => d.from))).toEqual(new Set([appPort]));
    const stats = serverStats(r);
    expect(stats[0].udpSockets + stats[1].udpSockets).toBe(1);
    expect(ended).toBe(false);
  });

  it("a spread peer whose traffic only comes from the server, over members only, stays in the client's peer table past its idle timeout", async () => {
    const IDLE_MS = 1_500;
    const r = await started();
    const table = new PeerTable({
      maxConnections: 10,
      idleTimeoutMs: IDLE_MS,
      newPeerRate: 10,
      newPeerBurst: 10,
      now: Date.now(),
    });
    const causes: string[] = [];
    const context: SessionContext = {
      connect: () => r.clients[0].stack.connect(SERVER),
      connectDelay: () => 0,
      handshakePacket: undefined,
      totals: r.clients[0].totals,
      touch: (session) => table.touch(session),
      opened: () => {},
      failed: () => {},
      closed: (session, cause) => {
        table.forget(session);
        causes.push(cause);
      },
      flows: r.clients[0].flows,
      flowRate: 0, // spread as soon as the first connection is up
    };
    const session = new PeerSession(PEER, r.clients[0].via, context);
    table.add(session);
    // One datagram from the peer: the application learns its address; then the peer is silent.
    const first = Buffer.alloc(100);
    first.writeUInt32BE(1_000_000, 0);
    session.fromPeer(first, r.clients[0].via);
    await until(() => r.atApp.length === 1 && r.clients[1].flows.counters.flowJoins === 1);
    expect(r.clients[1].flows.counters.flowJoins).toBe(1);
    // The first connection is reset: it comes back as a member in the owner's shard, and from
    // then on every flow of the peer is a member.
    r.servers[0].accepted[0].close();
    await until(() => r.clients[0].flows.counters.flowJoins === 1, 5_000);
    expect(r.clients[0].flows.counters.flowJoins).toBe(1);

    // The application alone sends, for three idle timeouts.
    const delivered = () => r.toPeer[0].length + r.toPeer[1].length;
    const before = delivered();
    const until3 = Date.now() + 3 * IDLE_MS;
    let seq = 0;
    while (Date.now() < until3 && !session.isClosed) {
      await r.reply(seq, 4);
      seq += 4;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(causes).toEqual([]);
    expect(session.isClosed).toBe(false);
    expect(table.get(session.key)).toBe(session);
    expect(delivered() - before).toBeGreaterThan(0);
    session.close("local");
    table.closeAll("local");
  });

  it("a server group whose traffic runs on members only, either way, outlives the connections' idle timeout; silent, it ends", async () => {
    const IDLE_MS = 1_500;
    const r = await started(undefined, IDLE_MS);
    const { first, group } = await r.spreadPeer();
    // As a client session does: once the group has no flow left, it ends (which also cancels
    // the reopening of a flow lost a moment before the last one idled out).
    first.once("close", () => {
      if (!group.firstLost(() => group.close())) throw new Error("the peer would have ended");
    });
    await until(() => group.size === 2);
    await r.send(group, 0, 8);
    await until(() => r.atApp.length === 8);
    // The owner's relay is reset: the group's socket stays, every flow is a member from now on.
    r.servers[0].accepted[0].close();
    await until(() => r.clients[0].flows.counters.flowJoins === 1, 5_000);
    expect(r.clients[0].flows.counters.flowJoins).toBe(1);
    const groups = () => serverStats(r).reduce((n, s) => n + s.flowGroups, 0);
    const sockets = () => serverStats(r).reduce((n, s) => n + s.udpSockets, 0);
    const appPort = r.atApp[0].from;
    // No flow may be lost (and opened again) on the way.
    const losses = () =>
      r.clients[0].flows.counters.flowMemberLosses + r.clients[1].flows.counters.flowMemberLosses;
    const lossesBefore = losses();

    // Only the application sends, for twice the idle timeout; then only the peer.
    let seq = 0;
    for (const end = Date.now() + 2 * IDLE_MS; Date.now() < end; seq += 4) {
      await r.reply(seq, 4);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(groups()).toBe(1);
    const atAppBefore = r.atApp.length;
    for (const end = Date.now() + 2 * IDLE_MS; Date.now() < end; seq += 4) {
      await r.send(group, seq, 4, 4);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(groups()).toBe(1);
    expect(sockets()).toBe(1);
    expect(losses()).toBe(lossesBefore);
    expect(r.atApp.length).toBeGreaterThan(atAppBefore);
    expect(new Set(r.atApp.map((d) => d.from))).toEqual(new Set([appPort]));

    // Silent: the connections idle out, and the group's socket goes with the last of them.
    await until(() => groups() === 0 && sockets() === 0, 4 * IDLE_MS);
    expect(groups()).toBe(0);
    expect(sockets()).toBe(0);
  });
});
