/**
 * PeerTable's lookup of a received datagram's session, over real `UdpBatch` views (filled by
 * hand as the addon fills them): by the source record's numeric key with its bytes compared,
 * by name when another peer holds the key, never a closed or forgotten session. And the
 * reply target a session keeps: its socket, address and record.
 */
import { newRelayCounters, type TunnelSocket } from "fake-tcp-common";
import { ADDRESS_RECORD_BYTES, encodeUdpAddress, UdpBatch } from "fake-tcp-tun/udp";
import { afterEach, describe, expect, it } from "vitest";
import { PeerSession, type ReplySocket, type SessionContext } from "../src/peer-session.js";
import { PeerTable } from "../src/peer-table.js";

/** A batch of one-byte datagrams from the given source records. */
function batchOf(records: Uint8Array[]): UdpBatch {
  const addresses = new Uint8Array(records.length * ADDRESS_RECORD_BYTES);
  const offsets = new Uint32Array(records.length * 2);
  records.forEach((record, i) => {
    addresses.set(record, i * ADDRESS_RECORD_BYTES);
    offsets[2 * i] = i;
    offsets[2 * i + 1] = 1;
  });
  const batch = new UdpBatch(
    new ArrayBuffer(Math.max(1, records.length)),
    offsets.buffer,
    addresses.buffer,
    new ArrayBuffer(addresses.length),
  );
  batch.count = records.length;
  return batch;
}

/** The record of `address`:`port` with its numeric key replaced by `key`. */
function withKey(record: Uint8Array, key: number): Uint8Array {
  const copy = record.slice();
  new DataView(copy.buffer).setFloat64(24, key, true);
  return copy;
}

const never: SessionContext = {
  connect: () => new Promise<TunnelSocket>(() => {}),
  connectDelay: () => 0,
  handshakePacket: undefined,
  totals: newRelayCounters(),
  touch: () => {},
  opened: () => {},
  failed: () => {},
  closed: () => {},
};

const quiet: ReplySocket = { sendTo: () => {} };

describe("PeerTable.find", () => {
  const tables: PeerTable[] = [];
  afterEach(() => {
    for (const table of tables.splice(0)) table.closeAll("local");
  });

  function table(): PeerTable {
    const t = new PeerTable({
      maxConnections: 100,
      idleTimeoutMs: 60_000,
      newPeerRate: 100,
      newPeerBurst: 100,
      now: Date.now(),
    });
    tables.push(t);
    return t;
  }

  /** A session for the source of datagram `i` of `batch`, as the shard opens one. */
  function sessionOf(batch: UdpBatch, i: number, context = never): PeerSession {
    return new PeerSession(
      { address: batch.address(i), port: batch.port(i), family: batch.family(i) },
      quiet,
      context,
      batch.copyAddress(i),
      batch.key(i),
    );
  }

  it("finds each datagram's session by its source, and nothing for an unknown peer", () => {
    const a = encodeUdpAddress("10.0.0.1", 5000);
    const b = encodeUdpAddress("2001:db8::1", 5000);
    const c = encodeUdpAddress("10.0.0.1", 5001);
    const peers = table();
    const first = batchOf([a, b]);
    const sa = sessionOf(first, 0);
    const sb = sessionOf(first, 1);
    peers.add(sa);
    peers.add(sb);
    const batch = batchOf([a, a, b, a, c, b]);
    const found = Array.from({ length: batch.count }, (_, i) => peers.find(batch, i));
    expect(found).toEqual([sa, sa, sb, sa, undefined, sb]);
  });

  it("tells apart two peers that share a numeric key (an IPv6 hash collision)", () => {
    const x = encodeUdpAddress("2001:db8::1", 7000);
    const y = withKey(
      encodeUdpAddress("2001:db8::2", 7000),
      new DataView(x.buffer).getFloat64(24, true),
    );
    const peers = table();
    const batch = batchOf([x, y, x, y, y]);
    expect(batch.key(0)).toBe(batch.key(1));
    const sx = sessionOf(batch, 0);
    const sy = sessionOf(batch, 1);
    peers.add(sx);
    peers.add(sy);
    const found = Array.from({ length: batch.count }, (_, i) => peers.find(batch, i));
    expect(found).toEqual([sx, sy, sx, sy, sy]);
  });

  it("never returns a closed or forgotten session", () => {
    const a = encodeUdpAddress("10.0.0.9", 9);
    const peers = table();
    const batch = batchOf([a, a]);
    const session = sessionOf(batch, 0, {
      ...never,
      closed: (s) => peers.forget(s),
    });
    peers.add(session);
    expect(peers.find(batch, 0)).toBe(session);
    session.close("local");
    // Neither the next datagram of the batch nor a new lookup sees it.
    expect(peers.find(batch, 1)).toBeUndefined();
    expect(peers.find(batch, 0)).toBeUndefined();
    expect(peers.size).toBe(0);
  });

  it("finds a session of a node:dgram socket by name only", () => {
    const peers = table();
    const session = new PeerSession({ address: "fe80::1%eth0", port: 53, family: 6 }, quiet, never);
    peers.add(session);
    expect(peers.get("[fe80::1%eth0]:53")).toBe(session);
    expect(peers.find(batchOf([encodeUdpAddress("fe80::1", 53)]), 0)).toBeUndefined();
  });
});

describe("a session's reply target", () => {
  it("replies through the socket the peer last sent to, to its address and record", async () => {
    const record = encodeUdpAddress("10.0.0.1", 5000);
    const sent: string[] = [];
    const via = (name: string): ReplySocket => ({
      sendTo: (datagram, peer, to) =>
        sent.push(`${name} ${Buffer.from(datagram)} ${peer.address}:${peer.port} ${to === record}`),
    });
    let deliver: ((view: Uint8Array) => void) | undefined;
    const sock: TunnelSocket = {
      localAddress: "192.168.200.2",
      localPort: 1,
      remoteAddress: "10.9.9.9",
      remotePort: 2,
      closed: false,
      peerIsOurs: false,
      send: () => true,
      onDatagram: (handler: (view: Uint8Array) => void) => {
        deliver = handler;
      },
      once: () => sock,
      close: () => {},
    };
    const session = new PeerSession(
      { address: "10.0.0.1", port: 5000, family: 4 },
      via("first"),
      { ...never, connect: () => Promise.resolve(sock) },
      record,
      new DataView(record.buffer).getFloat64(24, true),
    );
    await new Promise((r) => setTimeout(r, 0));
    deliver!(Buffer.from("one"));
    session.fromPeer(Buffer.from("x"), via("second"));
    deliver!(Buffer.from("two"));
    expect(sent).toEqual(["first one 10.0.0.1:5000 true", "second two 10.0.0.1:5000 true"]);
  });
});
