/**
 * The server's relay on loopback with a recording connection: datagrams both ways over its
 * own connected, batched UDP socket, the stack's view reused right after the call (the run
 * writer copies it), runs sent as one segmented send, oversize datagrams counted, close. The
 * shard's relay table with connections that end on every path (before they are accepted, by
 * the peer, by the server, silently): no relay or UDP socket outlives its connection, the
 * stats count what is open, the per-connection lines are rate-limited.
 */
import { createSocket, type Socket } from "node:dgram";
import { readdirSync } from "node:fs";
import { type LogSink, SUPPRESSED_MSG, UdpRunWriter } from "fake-tcp-common";
import { RecordingSocket as BaseRecordingSocket } from "fake-tcp-common/testing";
import { UdpReceiveArea } from "fake-tcp-tun/udp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newServerCounters, RELAY_BATCH_SIZE, Relay } from "../src/relay.js";

import { RelayTable } from "../src/relay-table.js";

/** The server's end of a connection: the stack refuses datagrams beyond a 1500-byte MTU. */
class RecordingSocket extends BaseRecordingSocket {
  constructor() {
    super({
      localAddress: "192.168.201.2",
      localPort: 4567,
      remoteAddress: "10.0.0.1",
      remotePort: 40000,
      maxDatagramBytes: 1460,
    });
  }
}

async function until(check: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

describe("Relay", () => {
  let app: Socket;
  let appPort: number;
  const atApp: string[] = [];
  let lastSender: { address: string; port: number } | undefined;
  beforeAll(async () => {
    app = createSocket("udp4");
    app.on("message", (m, r) => {
      atApp.push(m.toString());
      lastSender = r;
    });
    await new Promise<void>((r) => app.bind(0, "127.0.0.1", () => r()));
    appPort = app.address().port;
  });
  afterAll(() => app.close());

  /** A relay of `sock` to the app's socket, calling `onEnd` when the connection ends. */
  const relayToApp = (
    sock: RecordingSocket,
    totals: ReturnType<typeof newServerCounters>,
    area: UdpReceiveArea,
    onEnd: (r: Relay, cause: string) => void = () => {},
  ) =>
    new Relay(
      sock,
      { address: "127.0.0.1", port: appPort, family: 4 },
      totals,
      new UdpRunWriter(),
      () => {},
      area,
      onEnd,
    );

  it("relays both ways, counts oversize datagrams, closes with an RST", async () => {
    const sock = new RecordingSocket();
    const totals = newServerCounters();
    const ended: string[] = [];
    const relay = relayToApp(
      sock,
      totals,
      new UdpReceiveArea(RELAY_BATCH_SIZE, 1500),
      (_r, cause) => ended.push(cause),
    );
    // Tunnel -> UDP: the stack reuses its view right after the call.
    const view = Buffer.from("from-tunnel");
    sock.datagramHandler!(view);
    view.write("XXXXXXXXXXX");
    await until(() => atApp.length === 1);
    expect(atApp).toEqual(["from-tunnel"]);
    expect(totals.tunnelToUdp).toBe(1);

    // A run of equal datagrams (and a shorter last one) leaves in one segmented send and
    // arrives as the same separate datagrams.
    const run = ["r1-aaaa", "r2-bbbb", "r3-cccc", "r4-dd"];
    for (const m of run) sock.datagramHandler!(Buffer.from(m));
    await until(() => atApp.length === 1 + run.length);
    expect(atApp.slice(1)).toEqual(run);
    expect(relay.udp.stats().segmentedSends).toBe(1);
    expect(totals.tunnelToUdp).toBe(1 + run.length);

    // UDP -> tunnel, from the application to the relay's own socket.
    for (const m of ["a", "bb", "x".repeat(1461), "y".repeat(1600)])
      app.send(m, lastSender!.port, "127.0.0.1");
    // Datagrams arrive in order on loopback: once the last one is counted (cut off by the
    // socket), every earlier one has been handled.
    await until(() => relay.truncated() === 1);
    expect(sock.sent.slice(0, 2)).toEqual(["a", "bb"]);
    expect(sock.sent).toHaveLength(3); // 1600 bytes exceed the receive slot (MTU)
    expect(totals.udpToTunnel).toBe(2);
    expect(totals.sendDrops + relay.truncated()).toBe(2);

    sock.closeHandler!("peer-reset");
    expect(ended).toEqual(["peer-reset"]);
    expect(sock.closed).toBe(true);
    expect(totals.sendDrops).toBe(2);
    expect(relay.udp.fd).toBe(-1);
  });

  it("relays sharing one receive area each hand over only their own datagrams", async () => {
    const area = new UdpReceiveArea(4, 1500);
    const totals = newServerCounters();
    const relays = Array.from({ length: 3 }, () => {
      const sock = new RecordingSocket();
      const relay = relayToApp(sock, totals, area);
      return { sock, relay, port: relay.udp.localAddress().port };
    });
    // Interleaved, more per relay than the area has slots: several batches each, all
    // through the same buffers.
    for (let n = 0; n < 10; n++) {
      for (const [i, r] of relays.entries()) app.send(`relay${i}-${n}`, r.port, "127.0.0.1");
    }
    await until(() => relays.every((r) => r.sock.sent.length === 10));
    for (const [i, r] of relays.entries()) {
      expect(r.sock.sent).toEqual(Array.from({ length: 10 }, (_, n) => `relay${i}-${n}`));
    }
    // One relay closing leaves the area working for the others.
    relays[0].relay.close();
    app.send("after-close", relays[1].port, "127.0.0.1");
    await until(() => relays[1].sock.sent.length === 11);
    expect(relays[1].sock.sent[10]).toBe("after-close");
    for (const r of relays) r.relay.close();
  });
});

/** Like the stack's socket: close() ends it and emits `close` once, with cause "local". */
class StackLikeSocket extends RecordingSocket {
  emitsClose = true;
  override close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.emitsClose) this.closeHandler?.("local");
  }
  /** The peer resets the connection. */
  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeHandler?.("peer-reset");
  }
}

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

function recordingSink(): { sink: LogSink; lines: { msg: string; obj: object }[] } {
  const lines: { msg: string; obj: object }[] = [];
  const at = (obj: object, msg: string) => {
    lines.push({ msg, obj });
  };
  return {
    lines,
    sink: { trace: at, debug: at, info: at, warn: at, error: at, fatal: at },
  };
}

describe("RelayTable", () => {
  const remote = { address: "127.0.0.1", port: 9, family: 4 as const };
  /** A table relaying to `remote` (nothing listens there), logging to `sink`. */
  const relayTable = (sink: LogSink) =>
    new RelayTable({
      remote,
      runs: new UdpRunWriter(),
      flushTunnel: () => {},
      maxDatagramBytes: 1500,
      logger: sink,
    });

  it("opens nothing for a connection reset before it was accepted (Relay refuses it too)", () => {
    const { sink } = recordingSink();
    const table = relayTable(sink);
    const fdsBefore = openFds();
    // 1,000 connections that were reset between their handshake and the accept loop.
    for (let i = 0; i < 1_000; i++) {
      const sock = new StackLikeSocket();
      sock.reset();
      expect(table.accept(sock)).toBeNull();
    }
    expect(openFds()).toBe(fdsBefore);
    expect(table.stats()).toMatchObject({
      relays: 0,
      connections: 0,
      udpSockets: 0,
      opened: 0,
      endedBeforeAccept: 1_000,
    });
    const closed = new StackLikeSocket();
    closed.reset();
    const totals = newServerCounters();
    expect(
      () =>
        new Relay(
          closed,
          remote,
          totals,
          new UdpRunWriter(),
          () => {},
          new UdpReceiveArea(RELAY_BATCH_SIZE, 1500),
          () => {},
        ),
    ).toThrow(/already ended/);
    expect(totals.udpSockets).toBe(0);
    expect(openFds()).toBe(fdsBefore);
  });

  it("releases the relay and its UDP socket on every path that ends a connection, once", () => {
    const { sink, lines } = recordingSink();
    const table = relayTable(sink);
    const fdsBefore = openFds();
    const byPeer = new StackLikeSocket();
    const byServer = new StackLikeSocket();
    const silent = new StackLikeSocket();
    silent.emitsClose = false; // ends without ever emitting close
    const atStop = new StackLikeSocket();
    const relays = [byPeer, byServer, silent, atStop].map((sock) => table.accept(sock));
    expect(relays.every((r) => r !== null)).toBe(true);
    expect(openFds()).toBe(fdsBefore + 4);
    expect(table.stats()).toMatchObject({ relays: 4, udpSockets: 4, opened: 4 });

    byPeer.reset();
    relays[1]!.close();
    relays[2]!.close();
    expect(table.stats()).toMatchObject({ relays: 1, udpSockets: 1, closed: 3 });
    table.closeAll();
    expect(table.stats()).toMatchObject({ relays: 0, udpSockets: 0, opened: 4, closed: 4 });
    expect(openFds()).toBe(fdsBefore);
    for (const sock of [byPeer, byServer, silent, atStop]) expect(sock.closed).toBe(true);
    const closedLines = lines.filter((l) => l.msg === "connection closed");
    expect(closedLines.map((l) => (l.obj as { cause: string }).cause)).toEqual([
      "peer-reset",
      "local",
      "local",
      "local",
    ]);
    // Closing again changes nothing.
    relays[0]!.close();
    table.closeAll();
    expect(table.stats()).toMatchObject({ relays: 0, udpSockets: 0, closed: 4 });
  });

  it("rate-limits the per-connection lines of a connection flood and summarizes the rest", () => {
    const { sink, lines } = recordingSink();
    const table = relayTable(sink);
    const fdsBefore = openFds();
    for (let i = 0; i < 1_000; i++) {
      const sock = new StackLikeSocket();
      table.accept(sock);
      sock.reset();
    }
    expect(openFds()).toBe(fdsBefore);
    expect(table.stats()).toMatchObject({ opened: 1_000, closed: 1_000, relays: 0, udpSockets: 0 });
    const count = (msg: string) => lines.filter((l) => l.msg === msg).length;
    expect(count("connection opened")).toBeLessThanOrEqual(100);
    expect(count("connection closed")).toBeLessThanOrEqual(100);
    table.closeAll();
    const summaries = lines.filter((l) => l.msg === SUPPRESSED_MSG).map((l) => l.obj);
    expect(summaries).toEqual([
      expect.objectContaining({
        of: "connection opened",
        suppressed: 1_000 - count("connection opened"),
      }),
      expect.objectContaining({
        of: "connection closed",
        suppressed: 1_000 - count("connection closed"),
      }),
    ]);
  });
});
