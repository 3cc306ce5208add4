/**
 * Many echo streams at once, one UDP socket per target (the fleet test: one stream through
 * each WireGuard peer). Every `--interval` ms each socket sends a numbered datagram to its own
 * target and records when the echo comes back, so a caller can measure each stream's outage.
 * Prints `{"event":"ready"}` once bound and, when stopped (SIGTERM) or after `--duration`,
 * one JSON line `{"mode":"streams","streams":[...]}` with each stream's sends and replies
 * (the `StreamResult` shape of udp-probe's stream mode).
 *
 * Usage: node multi-stream.js --target host:port [--target host:port...] [--interval MS]
 *          [--duration MS] [--size N]
 */
import { createSocket, type Socket } from "node:dgram";
import { hostPort } from "./args.js";

const argv = process.argv.slice(2);
const targets: Array<{ host: string; port: number }> = [];
let intervalMs = 100;
let durationMs = 120_000;
let size = 32;
for (let i = 0; i < argv.length; i += 2) {
  const value = argv[i + 1];
  switch (argv[i]) {
    case "--target":
      targets.push(hostPort(value, "target"));
      break;
    case "--interval":
      intervalMs = Number(value);
      break;
    case "--duration":
      durationMs = Number(value);
      break;
    case "--size":
      size = Math.max(8, Number(value));
      break;
    default:
      throw new Error(`unknown option ${argv[i]}`);
  }
}
if (targets.length === 0) throw new Error("give at least one --target host:port");

interface Stream {
  socket: Socket;
  sentAt: number[];
  replies: Array<[seq: number, sentAt: number, receivedAt: number]>;
  mismatched: number;
}

function payload(index: number, seq: number): Buffer {
  const buf = Buffer.alloc(size);
  buf.writeUInt32BE(index, 0);
  buf.writeUInt32BE(seq, 4);
  for (let i = 8; i < size; i++) buf[i] = (index * 31 + seq * 7 + i) & 0xff;
  return buf;
}

function open(index: number): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const socket = createSocket("udp4");
    const stream: Stream = { socket, sentAt: [], replies: [], mismatched: 0 };
    socket.on("message", (msg) => {
      const seq = msg.length >= 8 ? msg.readUInt32BE(4) : -1;
      if (seq >= 0 && seq < stream.sentAt.length && payload(index, seq).equals(msg))
        stream.replies.push([seq, stream.sentAt[seq], Date.now()]);
      else stream.mismatched++;
    });
    socket.once("error", reject);
    socket.bind(0, () => resolve(stream));
  });
}

const streams = await Promise.all(targets.map((_, i) => open(i)));
console.log(JSON.stringify({ event: "ready" }));

let stopped = false;
for (const signal of ["SIGTERM", "SIGINT"] as const)
  process.on(signal, () => {
    stopped = true;
  });

const end = Date.now() + durationMs;
// The sockets take turns through the interval, so the tunnel sees a steady trickle.
const step = intervalMs / streams.length;
let seq = 0;
while (!stopped && Date.now() < end) {
  const roundStart = Date.now();
  for (let i = 0; i < streams.length && !stopped; i++) {
    const s = streams[i];
    s.sentAt.push(Date.now());
    s.socket.send(payload(i, seq), targets[i].port, targets[i].host);
    const due = roundStart + (i + 1) * step;
    await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
  }
  seq++;
}
await new Promise((r) => setTimeout(r, 300));
for (const s of streams) s.socket.close();
console.log(
  JSON.stringify({
    mode: "streams",
    size,
    streams: streams.map((s, i) => ({
      target: `${targets[i].host}:${targets[i].port}`,
      sent: s.sentAt.length,
      received: s.replies.length,
      mismatched: s.mismatched,
      firstSentAt: s.sentAt[0] ?? null,
      lastSentAt: s.sentAt.at(-1) ?? null,
      replies: s.replies,
    })),
  }),
);
