/**
 * The client's per-peer logic without a device: queueing while connecting, the handshake
 * packet first, copying the zero-copy view, closing (on every path, including a connection
 * that ends before the session listens), waiting for a reconnect, and the table's bound, TTL
 * and admission of new peers. The connection is a small recording implementation of
 * `TunnelSocket`.
 */
import { createSocket, type Socket } from "node:dgram";
import { newRelayCounters, type TunnelSocket } from "fake-tcp-common";
import { RecordingSocket } from "fake-tcp-common/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  dgramReplySocket,
  MAX_QUEUED_DATAGRAMS,
  PeerSession,
  type SessionContext,
} from "../src/peer-session.js";
import { EVICTABLE_IDLE_MS, PeerTable } from "../src/peer-table.js";

/** Replies through `udp`; what they count is tested with the run writer and the shard. */
function replyVia(udp: Socket) {
  return dgramReplySocket(udp, { sent: () => {}, refused: () => {} });
}

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function context(connect: () => Promise<TunnelSocket>, handshake?: string) {
  const events: string[] = [];
  const ctx: SessionContext = {
    connect,
    connectDelay: () => 0,
    handshakePacket: handshake === undefined ? undefined : Buffer.from(handshake),
    totals: newRelayCounters(),
    touch: () => events.push("touch"),
    opened: () => events.push("opened"),
    failed: () => events.push("failed"),
    closed: (_s, cause) => events.push(`closed:${cause}`),
  };
  return { ctx, events };
}

describe("PeerSession", () => {
  let udp: Socket;
  let receiver: Socket;
  let receiverPort: number;
  const received: string[] = [];
  beforeAll(async () => {
    udp = createSocket("udp4");
    receiver = createSocket("udp4");
    receiver.on("message", (m) => received.push(m.toString()));
    await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
    await new Promise<void>((r) => receiver.bind(0, "127.0.0.1", () => r()));
    receiverPort = receiver.address().port;
  });
  afterAll(() => {
    udp.close();
    receiver.close();
  });

  /** A session for the peer 127.0.0.1:9 with `ctx`, replying through `udp`. */
  const sessionWith = (ctx: SessionContext) =>
    new PeerSession({ address: "127.0.0.1", port: 9, family: 4 }, replyVia(udp), ctx);

  /** A session whose connect waits for `pending` to be resolved with the connection. */
  function connectingSession() {
    const pending = deferred<TunnelSocket>();
    const { ctx, events } = context(() => pending.promise);
    return { pending, ctx, events, session: sessionWith(ctx) };
  }

  it("queues while connecting, sends the handshake packet first, then the queue in order", async () => {
    const pending = deferred<TunnelSocket>();
    const { ctx, events } = context(() => pending.promise, "HELLO");
    const peer = { address: "127.0.0.1", port: receiverPort, family: 4 as const };
    const session = new PeerSession(peer, replyVia(udp), ctx);
    for (let i = 0; i < MAX_QUEUED_DATAGRAMS + 3; i++)
      session.fromPeer(Buffer.from(`d${i}`), replyVia(udp));
    expect(ctx.totals.queueDrops).toBe(3);
    const sock = new RecordingSocket();
    pending.resolve(sock);
    await pending.promise;
    await Promise.resolve();
    expect(events).toEqual(["opened"]);
    expect(sock.sent[0]).toBe("HELLO");
    expect(sock.sent.slice(1)).toEqual(
      Array.from({ length: MAX_QUEUED_DATAGRAMS }, (_, i) => `d${i}`),
    );
    session.fromPeer(Buffer.from("later"), replyVia(udp));
    expect(sock.sent.at(-1)).toBe("later");
    expect(ctx.totals.udpToTunnel).toBe(MAX_QUEUED_DATAGRAMS + 1);

    // Tunnel -> UDP: the view is reused by the stack right after the call; the peer must
    // still get what it held during the call.
    const view = Buffer.from("reply-1");
    sock.datagramHandler!(view);
    view.write("XXXXXXX");
    const deadline = Date.now() + 2_000;
    while (received.length === 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    expect(received).toEqual(["reply-1"]);
    expect(events).toContain("touch");

    sock.closeHandler!("peer-reset");
    expect(events.at(-1)).toBe("closed:peer-reset");
    expect(session.isOpen).toBe(false);
  });

  it("copies a datagram it must queue: the receive batch is reused after the call", async () => {
    const pending = deferred<TunnelSocket>();
    const { ctx } = context(() => pending.promise);
    const endpoint = replyVia(udp);
    const session = new PeerSession({ address: "127.0.0.1", port: 9, family: 4 }, endpoint, ctx);
    const batch = Buffer.from("first");
    session.fromPeer(batch.subarray(0, 5), endpoint);
    batch.write("XXXXX");
    const sock = new RecordingSocket();
    pending.resolve(sock);
    await pending.promise;
    await Promise.resolve();
    expect(sock.sent).toEqual(["first"]);
    session.close("local");
  });

  it("a failed connect is reported and ends the session", async () => {
    const { ctx, events } = context(() => Promise.reject(new Error("no answer")));
    const session = sessionWith(ctx);
    session.fromPeer(Buffer.from("x"), replyVia(udp));
    await new Promise((r) => setTimeout(r, 0));
    expect(events).toEqual(["failed", "closed:connect-failed"]);
    expect(ctx.totals.queueDrops).toBe(1);
  });

  it("a session closed while connecting resets the connection when it arrives", async () => {
    const { pending, session } = connectingSession();
    session.close("local");
    const sock = new RecordingSocket();
    pending.resolve(sock);
    await pending.promise;
    await Promise.resolve();
    expect(sock.closed).toBe(true);
    expect(sock.sent).toEqual([]);
  });

  /** Lets the promise callbacks queued so far run. */
  const settle = () => new Promise((r) => setTimeout(r, 0));

  it("a connection reset before the session listens ends the session (nothing left open)", async () => {
    const { pending, ctx, events, session } = connectingSession();
    session.fromPeer(Buffer.from("queued"), replyVia(udp));
    const sock = new RecordingSocket();
    // The handshake completes and, in the same batch of packets, the server resets: the
    // close event fires before the session's turn to attach its listener.
    pending.resolve(sock);
    sock.endByPeer("peer-reset");
    await settle();
    expect(session.isOpen).toBe(false);
    expect(session.isClosed).toBe(true);
    expect(events).toEqual(["failed", "closed:closed-at-open"]);
    expect(sock.sent).toEqual([]);
    expect(ctx.totals.queueDrops).toBe(1);
    // Later datagrams are dropped and counted, not sent on the dead connection.
    session.fromPeer(Buffer.from("late"), replyVia(udp));
    expect(ctx.totals.queueDrops).toBe(2);
  });

  it("a connection that closes while the queue is sent ends the session once", async () => {
    const { pending, ctx, events, session } = connectingSession();
    for (let i = 0; i < 5; i++) session.fromPeer(Buffer.from(`d${i}`), replyVia(udp));
    const sock = new RecordingSocket();
    let sends = 0;
    sock.send = (datagram) => {
      sock.sent.push(Buffer.from(datagram).toString());
      if (++sends === 2) sock.endByPeer("peer-reset");
      return true;
    };
    pending.resolve(sock);
    await settle();
    expect(events).toEqual(["opened", "closed:peer-reset"]);
    expect(sock.sent).toEqual(["d0", "d1"]);
    expect(ctx.totals.udpToTunnel).toBe(2);
    expect(ctx.totals.queueDrops).toBe(3);
    expect(session.isClosed).toBe(true);
  });

  describe("waiting for a reconnect", () => {
    afterEach(() => vi.useRealTimers());

    it("queues while it waits, then connects when the wait is over", async () => {
      vi.useFakeTimers();
      const sock = new RecordingSocket();
      let connects = 0;
      const { ctx, events } = context(() => {
        connects++;
        return Promise.resolve(sock);
      });
      const delays = [300, 200, 0];
      ctx.connectDelay = () => delays.shift()!;
      const session = sessionWith(ctx);
      expect(session.isWaiting).toBe(true);
      session.fromPeer(Buffer.from("early"), replyVia(udp));
      await vi.advanceTimersByTimeAsync(299);
      expect(connects).toBe(0);
      // The first wait ends, the context asks for 200 ms more.
      await vi.advanceTimersByTimeAsync(1);
      expect(connects).toBe(0);
      await vi.advanceTimersByTimeAsync(200);
      expect(connects).toBe(1);
      expect(events).toEqual(["opened"]);
      expect(sock.sent).toEqual(["early"]);
      expect(session.establishedAt).toBe(Date.now());
      sock.datagramHandler!(Buffer.from("reply"));
      expect(session.fromServer).toBe(1);
      session.close("local");
    });

    it("closing a waiting session stops the wait: it never connects", async () => {
      vi.useFakeTimers();
      let connects = 0;
      const { ctx, events } = context(() => {
        connects++;
        return Promise.resolve(new RecordingSocket());
      });
      ctx.connectDelay = () => 1_000;
      const session = sessionWith(ctx);
      session.fromPeer(Buffer.from("x"), replyVia(udp));
      session.close("evicted");
      expect(vi.getTimerCount()).toBe(0);
      await vi.advanceTimersByTimeAsync(5_000);
      expect(connects).toBe(0);
      expect(events).toEqual(["closed:evicted"]);
      expect(ctx.totals.queueDrops).toBe(1);
    });
  });
});

function newTable(maxConnections: number, idleTimeoutMs: number): PeerTable {
  return new PeerTable({
    maxConnections,
    idleTimeoutMs,
    newPeerRate: 1000,
    newPeerBurst: 1000,
    now: Date.now(),
  });
}

describe("PeerTable", () => {
  let udp: Socket;
  beforeAll(async () => {
    udp = createSocket("udp4");
    await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
  });
  afterAll(() => udp.close());

  async function openSession(table: PeerTable, port: number, events: string[]) {
    const sock = new RecordingSocket();
    const { ctx } = context(() => Promise.resolve(sock));
    ctx.closed = (s, cause) => {
      events.push(`${s.key}:${cause}`);
      table.forget(s);
    };
    const session = new PeerSession({ address: "127.0.0.1", port, family: 4 }, replyVia(udp), ctx);
    table.add(session);
    // The connection opens a few promise reactions later (setImmediate: not faked below).
    await new Promise((r) => setImmediate(r));
    return { session, sock };
  }

  it("evicts the least recently used peer beyond the bound, with an RST", async () => {
    const events: string[] = [];
    const table = newTable(2, 60_000);
    const a = await openSession(table, 1001, events);
    await openSession(table, 1002, events);
    table.get(a.session.key); // a is now the most recently used
    await openSession(table, 1003, events);
    expect(events).toEqual(["127.0.0.1:1002:evicted"]);
    expect(table.size).toBe(2);
    table.closeAll("local");
    expect(events.sort()).toEqual([
      "127.0.0.1:1001:local",
      "127.0.0.1:1002:evicted",
      "127.0.0.1:1003:local",
    ]);
    expect(a.sock.closed).toBe(true);
  });

  it("expires an idle peer after the TTL; traffic refreshes it", async () => {
    // A fake clock drives the table's sweep timer, Date.now() (its touch throttle) and,
    // through the spy, performance.now() (the LRU cache's TTL clock). With real 100 ms sleeps
    // a busy machine could stretch a gap between touches past the 300 ms TTL.
    vi.useFakeTimers({
      toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"],
    });
    const perfStart = performance.now();
    const dateStart = Date.now();
    const clock = vi
      .spyOn(performance, "now")
      .mockImplementation(() => perfStart + (Date.now() - dateStart));
    try {
      const events: string[] = [];
      const table = newTable(10, 300);
      const busy = await openSession(table, 2001, events);
      const idle = await openSession(table, 2002, events);
      for (let i = 0; i < 8; i++) {
        vi.advanceTimersByTime(100);
        table.touch(busy.session);
      }
      // 800 ms in: the idle peer was swept (the sweep runs every 300 ms here), the busy not.
      expect(events).toEqual(["127.0.0.1:2002:idle-timeout"]);
      expect(idle.sock.closed).toBe(true);
      expect(busy.sock.closed).toBe(false);
      expect(table.size).toBe(1);
      table.closeAll("local");
    } finally {
      clock.mockRestore();
      vi.useRealTimers();
    }
  });
});

describe("PeerTable admission of new peers", () => {
  let udp: Socket;
  beforeAll(async () => {
    udp = createSocket("udp4");
    await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
  });
  afterAll(() => udp.close());
  afterEach(() => vi.useRealTimers());

  /** A session whose connection never completes (as when the server is slow). */
  function pendingSession(port: number, events: string[]) {
    const { ctx } = context(() => new Promise<TunnelSocket>(() => {}));
    ctx.closed = (s, cause) => events.push(`${s.key}:${cause}`);
    return new PeerSession({ address: "10.1.0.1", port, family: 4 }, replyVia(udp), ctx);
  }

  it("admits at most the new-peer rate, and at most the burst at once", () => {
    const table = new PeerTable({
      maxConnections: 100,
      idleTimeoutMs: 60_000,
      newPeerRate: 4,
      newPeerBurst: 4,
      now: 0,
    });
    const at0 = Array.from({ length: 10 }, () => table.admit(0));
    expect(at0.filter((a) => a === "admitted")).toHaveLength(4);
    expect(table.refusals).toEqual({ peersRefusedRate: 6, peersRefusedFull: 0 });
    expect(table.admit(249)).toBe("rate");
    expect(table.admit(250)).toBe("admitted");
    // Over 10 s of a flood asking every millisecond: the burst plus 4 a second.
    let admitted = 0;
    for (let now = 251; now <= 10_250; now++) if (table.admit(now) === "admitted") admitted++;
    expect(admitted).toBe(40);
    table.closeAll("local");
  });

  it("a full table refuses newcomers while its peers are active, and never evicts them", () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const events: string[] = [];
    const table = new PeerTable({
      maxConnections: 2,
      idleTimeoutMs: 180_000,
      newPeerRate: 1000,
      newPeerBurst: 1000,
      now: Date.now(),
    });
    const legit = pendingSession(1, events);
    const quiet = pendingSession(2, events);
    table.add(legit);
    table.add(quiet);
    // The legitimate peer keeps sending (its table entry is refreshed); the other is silent.
    let refused = 0;
    for (let t = 0; t < EVICTABLE_IDLE_MS - 1_000; t += 100) {
      vi.advanceTimersByTime(100);
      table.touch(legit);
      // A spoofed source every 100 ms.
      if (table.admit(Date.now()) === "admitted") table.add(pendingSession(10_000 + t, events));
      else refused++;
    }
    expect(refused).toBe((EVICTABLE_IDLE_MS - 1_000) / 100);
    expect(table.refusals.peersRefusedFull).toBe(refused);
    expect(events).toEqual([]);
    // Once the silent peer has been silent long enough, a newcomer takes its place.
    vi.advanceTimersByTime(1_000);
    table.touch(legit);
    expect(table.admit(Date.now())).toBe("admitted");
    table.add(pendingSession(3, events));
    expect(events).toEqual(["10.1.0.1:2:evicted"]);
    expect(table.get(legit.key)).toBe(legit);
    // And the table is full of active peers again.
    expect(table.admit(Date.now())).toBe("full");
    table.closeAll("local");
  });
});
