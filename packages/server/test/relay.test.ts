/**
 * The server's relay on loopback with a recording connection: datagrams both ways over its
 * own connected, batched UDP socket, the stack's view reused right after the call (the run
 * writer copies it), runs sent as one segmented send, oversize datagrams counted, close.
 */
import { createSocket, type Socket } from "node:dgram";
import { type TunnelSocket, UdpRunWriter } from "fake-tcp-common";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRelayCounters, Relay } from "../src/relay.js";

class RecordingSocket implements TunnelSocket {
  readonly localAddress = "192.168.201.2";
  readonly localPort = 4567;
  readonly remoteAddress = "10.0.0.1";
  readonly remotePort = 40000;
  sent: string[] = [];
  closed = false;
  datagramHandler: ((view: Uint8Array) => void) | undefined;
  closeHandler: ((cause: string) => void) | undefined;
  send(datagram: Uint8Array): boolean {
    this.sent.push(Buffer.from(datagram).toString());
    return datagram.length <= 1460;
  }
  onDatagram(handler: (view: Uint8Array) => void): void {
    this.datagramHandler = handler;
  }
  once(_event: "close", handler: (info: { cause: string }) => void): this {
    this.closeHandler = (cause) => handler({ cause });
    return this;
  }
  close(): void {
    this.closed = true;
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

  it("relays both ways, counts oversize datagrams, closes with an RST", async () => {
    const sock = new RecordingSocket();
    const totals = newRelayCounters();
    const ended: string[] = [];
    const relay = new Relay(
      sock,
      { address: "127.0.0.1", port: appPort, family: 4 },
      totals,
      new UdpRunWriter(),
      1500,
      (_r: Relay, cause: string) => ended.push(cause),
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
});
