/**
 * UDP test client (runs on A) against an echo application, in two modes. Prints one JSON
 * object on stdout when done.
 *
 * echo: `--sockets N --count K --size S --interval MS --wait MS`: N sockets (N source ports)
 *   each send K datagrams tagged with their own index and sequence; a reply counts only if it
 *   comes back to the socket that sent it with the same bytes.
 * stream: `--interval MS --duration MS --size S [--pause-at MS --pause-for MS]`: one socket
 *   sends a numbered datagram every interval (except during the optional pause) and records
 *   when each reply arrives (ms epoch), so a caller can measure outages. With `--rate N` it
 *   sends N datagrams per second instead (a few per timer tick; the pause holds them back),
 *   through a batched socket with a 32 MiB receive buffer, so that replies survive the probe
 *   being descheduled a while on a busy machine.
 *   A reply counts only when it is exactly the datagram sent (else `mismatched`); `forged`
 *   counts datagrams carrying the injector's mark (see marker.ts).
 *
 * Usage: node udp-probe.js echo|stream --target host:port [...]
 */
import { createSocket, type Socket } from "node:dgram";
import { UdpBatchSocket } from "fake-tcp-tun/udp";
import { hostPort, numberArg, parseArgs } from "./args.js";
import { isForged } from "./marker.js";

const mode = process.argv[2];
const args = parseArgs(process.argv.slice(3));
const target = hostPort(args.get("target"), "target");
const size = Math.max(8, numberArg(args, "size", 64));
const interval = numberArg(args, "interval", 10);

function payload(socketIndex: number, seq: number): Buffer {
  const buf = Buffer.alloc(size);
  buf.writeUInt32BE(socketIndex, 0);
  buf.writeUInt32BE(seq, 4);
  // A pattern derived from both numbers, so a reply delivered to the wrong socket is caught.
  for (let i = 8; i < size; i++) buf[i] = (socketIndex * 31 + seq * 7 + i) & 0xff;
  return buf;
}

function openSocket(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: "udp4", recvBufferSize: 1 << 20 });
    s.once("error", reject);
    s.bind(0, () => resolve(s));
  });
}

async function echoMode(): Promise<void> {
  const socketCount = numberArg(args, "sockets", 1);
  const count = numberArg(args, "count", 10);
  const wait = numberArg(args, "wait", 2000);
  const sockets = await Promise.all(Array.from({ length: socketCount }, openSocket));
  const stats = sockets.map((s) => ({
    port: s.address().port,
    sent: 0,
    received: 0,
    mismatched: 0,
    firstReplyMs: null as number | null,
  }));
  const start = Date.now();
  sockets.forEach((s, idx) => {
    s.on("message", (msg) => {
      const seq = msg.length >= 8 ? msg.readUInt32BE(4) : -1;
      const own =
        msg.length === size && msg.readUInt32BE(0) === idx && payload(idx, seq).equals(msg);
      if (own) {
        stats[idx].received++;
        stats[idx].firstReplyMs ??= Date.now() - start;
      } else stats[idx].mismatched++;
    });
  });
  for (let seq = 0; seq < count; seq++) {
    sockets.forEach((s, idx) => {
      s.send(payload(idx, seq), target.port, target.host);
      stats[idx].sent++;
    });
    await sleep(interval);
  }
  // Wait for the stragglers, but stop early once everything came back.
  const deadline = Date.now() + wait;
  while (Date.now() < deadline && stats.some((s) => s.received < s.sent)) await sleep(20);
  for (const s of sockets) s.close();
  const totalSent = stats.reduce((a, s) => a + s.sent, 0);
  const totalReceived = stats.reduce((a, s) => a + s.received, 0);
  console.log(JSON.stringify({ mode: "echo", size, totalSent, totalReceived, sockets: stats }));
}

async function streamMode(): Promise<void> {
  const duration = numberArg(args, "duration", 10_000);
  const rate = numberArg(args, "rate", 0);
  const s = rate > 0 ? openBatchSocket() : await openDgramSocket();
  const sentAt: number[] = [];
  const replies: Array<[seq: number, sentAt: number, receivedAt: number]> = [];
  let mismatched = 0;
  let forged = 0;
  s.onMessage((msg) => {
    if (isForged(msg)) {
      forged++;
      return;
    }
    const seq = msg.length >= 8 ? msg.readUInt32BE(4) : -1;
    if (seq >= 0 && seq < sentAt.length && payload(0, seq).equals(msg))
      replies.push([seq, sentAt[seq], Date.now()]);
    else mismatched++;
  });
  let stopped = false;
  const stop = () => {
    stopped = true;
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  const started = Date.now();
  const end = started + duration;
  // Optional quiet spell: nothing is sent from pause-at until pause-at + pause-for.
  const pauseFrom = started + numberArg(args, "pause-at", -1);
  const pauseUntil = pauseFrom + numberArg(args, "pause-for", 0);
  let seq = 0;
  // Rate mode: datagrams owed since the last tick. A timer held up by a busy machine is made
  // up for, but at most 500 ms worth at once (a longer stall is lost, not one huge burst).
  let owed = 0;
  let lastTick = started;
  while (!stopped && Date.now() < end) {
    const now = Date.now();
    if (now >= pauseFrom && now < pauseUntil) {
      lastTick = now;
      await sleep(Math.min(rate > 0 ? 5 : interval, pauseUntil - now));
      continue;
    }
    if (rate > 0) {
      owed = Math.min(owed + ((now - lastTick) * rate) / 1000, rate / 2);
      lastTick = now;
      for (; owed >= 1; owed--) {
        sentAt.push(now);
        s.send(payload(0, seq++));
      }
      await sleep(2);
      continue;
    }
    sentAt.push(Date.now());
    s.send(payload(0, seq++));
    await sleep(interval);
  }
  await sleep(300);
  s.close();
  console.log(
    JSON.stringify({
      mode: "stream",
      size,
      sent: sentAt.length,
      received: replies.length,
      mismatched,
      forged,
      firstSentAt: sentAt[0] ?? null,
      lastSentAt: sentAt.at(-1) ?? null,
      replies,
    }),
  );
}

/** The stream's socket: sends to the target, hands each reply over (valid during the call). */
interface StreamSocket {
  send(datagram: Buffer): void;
  onMessage(handler: (datagram: Buffer) => void): void;
  close(): void;
}

async function openDgramSocket(): Promise<StreamSocket> {
  const s = await openSocket();
  return {
    send: (d) => s.send(d, target.port, target.host),
    onMessage: (handler) => s.on("message", handler),
    close: () => s.close(),
  };
}

/** recvmmsg batches into a buffer beyond net.core.rmem_max (SO_RCVBUFFORCE: the rig is root). */
function openBatchSocket(): StreamSocket {
  const s = UdpBatchSocket.bind({
    address: "0.0.0.0",
    port: 0,
    family: 4,
    recvBufferBytes: 32 << 20,
    sendBufferBytes: 8 << 20,
    batchSize: 256,
  });
  s.connect(target.host, target.port);
  return {
    send: (d) => {
      s.send(d);
    },
    onMessage: (handler) =>
      s.onReceive((batch) => {
        for (let i = 0; i < batch.count; i++) {
          const start = batch.start(i);
          handler(batch.buffer.subarray(start, start + batch.length(i)));
        }
      }),
    close: () => s.close(),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (mode === "echo") await echoMode();
else if (mode === "stream") await streamMode();
else {
  console.error("usage: udp-probe.js echo|stream --target host:port [options]");
  process.exit(2);
}
