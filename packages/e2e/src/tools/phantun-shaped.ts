/**
 * A phantun-shaped tunnel program for the namespace rig: phantun 0.8's client or server
 * behaviour over a real TUN device, built on the phantun-shaped peer of `fake-tcp/testing`,
 * so that our programs can be tested against a peer that behaves like phantun on the wire.
 *
 *   client: UDP on --local; each new UDP source gets its own fake-TCP connection to --remote
 *           (datagrams arriving while it connects wait for it; a failed connect drops them).
 *   server: fake TCP on --listen; each accepted connection gets its own UDP socket towards
 *           --remote.
 * Either side sends the --handshake-packet file first on a new connection, and closes a
 * connection after --idle-timeout seconds (default 180) without a packet either way.
 *
 * Logs one JSON line per event, with `msg`: "phantun-shaped-<role> running", "connection
 * opened", "connection closed" (with `cause`), "connection failed", and "stats" (counters) on
 * SIGUSR1 and at exit (SIGTERM/SIGINT: every connection is reset, rules and device removed).
 *
 * Usage: node phantun-shaped.js client --local HOST:PORT --remote HOST:PORT [options]
 *        node phantun-shaped.js server --listen PORT --remote HOST:PORT [options]
 * Options: --tun NAME (tun0), --tun-local ADDR, --tun-peer ADDR (phantun's defaults:
 * 192.168.200.1/.2 client, 192.168.201.1/.2 server), --idle-timeout SECONDS,
 * --handshake-packet FILE. IPv4 only.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { type PhantunConnection, PhantunPeer } from "fake-tcp/testing";
import { parseArgs } from "./args.js";
import { type PhantunHost, setUpPhantunHost } from "./phantun-host.js";

/** Datagrams held per UDP source while its connection is being made. */
const MAX_PENDING = 1024;

function log(level: string, msg: string, fields: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ level, time: Date.now(), msg, ...fields }));
}

function usage(problem: string): never {
  console.error(`phantun-shaped: ${problem}`);
  process.exit(2);
}

function endpoint(value: string | undefined, name: string): { host: string; port: number } {
  const m = value ? /^(.*):(\d+)$/.exec(value) : null;
  if (!m || !isIPv4(m[1]) || Number(m[2]) < 1 || Number(m[2]) > 65535)
    usage(`--${name} must be IPV4:PORT, got ${value ?? "nothing"}`);
  return { host: m[1], port: Number(m[2]) };
}

function address(value: string | undefined, name: string, fallback: string): string {
  const v = value ?? fallback;
  if (!isIPv4(v)) usage(`--${name} must be an IPv4 address, got ${v}`);
  return v;
}

const role = process.argv[2];
if (role !== "client" && role !== "server") usage("first argument must be client or server");
const args = parseArgs(process.argv.slice(3));
const side = role === "client" ? 200 : 201;
const tun = args.get("tun") ?? "tun0";
const tunLocal = address(args.get("tun-local"), "tun-local", `192.168.${side}.1`);
const tunPeer = address(args.get("tun-peer"), "tun-peer", `192.168.${side}.2`);
const remote = endpoint(args.get("remote"), "remote");
const idleSeconds = Number(args.get("idle-timeout") ?? 180);
if (!Number.isFinite(idleSeconds) || idleSeconds <= 0)
  usage(`--idle-timeout must be a positive number of seconds, got ${args.get("idle-timeout")}`);
const local = role === "client" ? endpoint(args.get("local"), "local") : null;
const listenPort = role === "server" ? Number(args.get("listen")) : 0;
if (role === "server" && !(Number.isInteger(listenPort) && listenPort >= 1 && listenPort <= 65535))
  usage(`--listen must be a TCP port, got ${args.get("listen") ?? "nothing"}`);
let handshakePacket: Buffer | null = null;
const handshakeFile = args.get("handshake-packet");
if (handshakeFile !== undefined) {
  try {
    handshakePacket = readFileSync(handshakeFile);
  } catch (err) {
    usage(`--handshake-packet: cannot read ${handshakeFile}: ${(err as Error).message}`);
  }
}

let host: PhantunHost;
try {
  host = setUpPhantunHost({ role, tun, tunLocal, tunPeer, port: listenPort });
} catch (err) {
  console.error(`phantun-shaped: host setup failed: ${(err as Error).message.split("\n")[0]}`);
  process.exit(1);
}
const peer = new PhantunPeer({
  queue: host.device.queues[0],
  local4: tunPeer,
  idleTimeoutMs: idleSeconds * 1000,
});
const udpSockets = new Set<UdpSocket>();
const live = new Set<PhantunConnection>();
let opened = 0;
let failed = 0;

function describe(conn: PhantunConnection): Record<string, unknown> {
  return {
    local: `${conn.localAddress}:${conn.localPort}`,
    remote: `${conn.remoteAddress}:${conn.remotePort}`,
  };
}

/** Logs the connection and its close; the first segment is the handshake packet, if any. */
function started(conn: PhantunConnection, peerName: string, onClose: () => void): void {
  const openedAt = Date.now();
  opened++;
  live.add(conn);
  log("info", "connection opened", { peer: peerName, ...describe(conn) });
  conn.once("close", (cause: string) => {
    live.delete(conn);
    onClose();
    log("info", "connection closed", {
      peer: peerName,
      ...describe(conn),
      cause,
      seconds: Math.round((Date.now() - openedAt) / 1000),
      counters: conn.counters,
    });
  });
  if (handshakePacket) conn.send(handshakePacket);
}

function runClient(localEp: { host: string; port: number }): Promise<void> {
  const sessions = new Map<string, { conn: PhantunConnection | null; pending: Buffer[] }>();
  const udp = createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
  udpSockets.add(udp);
  const open = (key: string, from: RemoteInfo) => {
    const session = { conn: null as PhantunConnection | null, pending: [] as Buffer[] };
    sessions.set(key, session);
    peer.connect(`${remote.host}:${remote.port}`).then(
      (conn) => {
        session.conn = conn;
        started(conn, key, () => {
          if (sessions.get(key) === session) sessions.delete(key);
        });
        conn.onDatagram((d) => udp.send(d, from.port, from.address));
        for (const d of session.pending.splice(0)) conn.send(d);
      },
      (err: Error) => {
        failed++;
        if (sessions.get(key) === session) sessions.delete(key);
        log("warn", "connection failed", { peer: key, err: err.message });
      },
    );
    return session;
  };
  udp.on("message", (msg, from) => {
    const key = `${from.address}:${from.port}`;
    const session = sessions.get(key) ?? open(key, from);
    if (session.conn) session.conn.send(msg);
    else if (session.pending.length < MAX_PENDING) session.pending.push(msg);
  });
  return new Promise((resolve, reject) => {
    udp.once("error", reject);
    udp.bind(localEp.port, localEp.host, () => resolve());
  });
}

async function runServer(): Promise<void> {
  peer.listen(listenPort);
  void (async () => {
    for (;;) {
      let conn: PhantunConnection;
      try {
        conn = await peer.accept();
      } catch {
        return; // closed
      }
      const udp = createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
      udpSockets.add(udp);
      udp.on("message", (msg, from) => {
        if (from.address === remote.host && from.port === remote.port) conn.send(msg);
      });
      udp.on("error", (err) => log("warn", "udp error", { err: err.message }));
      started(conn, `${conn.remoteAddress}:${conn.remotePort}`, () => {
        udpSockets.delete(udp);
        udp.close();
      });
      conn.onDatagram((d) => udp.send(d, remote.port, remote.host));
    }
  })();
}

function stats(): Record<string, unknown> {
  return { connections: live.size, opened, failed, peer: peer.counters() };
}

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  peer.close();
  for (const s of udpSockets) s.close();
  host.close();
  log("info", "stats", stats());
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.on("SIGUSR1", () => log("info", "stats", stats()));

try {
  if (local) await runClient(local);
  else await runServer();
} catch (err) {
  host.close();
  console.error(`phantun-shaped: ${(err as Error).message}`);
  process.exit(1);
}
log("info", `phantun-shaped-${role} running`, {
  tun: host.device.name,
  tunLocal,
  tunPeer,
  remote: `${remote.host}:${remote.port}`,
  ...(local ? { local: `${local.host}:${local.port}` } : { listen: listenPort }),
  table: `ip ${host.table}`,
});
