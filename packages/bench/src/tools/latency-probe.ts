/**
 * UDP round-trip probe (runs on A): sends `--count` datagrams of `--size` bytes, one every
 * `--interval` ms, to an echo application and times each echo with the monotonic clock.
 * Each datagram starts with the PROBE_MAGIC word (so the rig's app host can steer probes to
 * the echo application while iperf3 holds the app port) and its sequence number.
 * The first `--warmup` probes go first on the same schedule and are left out of `rttUs`: the
 * first datagram of a new UDP peer waits for the tunnel's handshake, which is connection
 * set-up, not round-trip time. Their round trips are reported apart (`warmupUs`).
 * Prints one JSON line: {"sent","received","rttUs":[...],"warmupUs":[...]} (round trips in
 * microseconds; -1 in `warmupUs` for a warm-up probe that got no echo).
 *
 * Usage: node latency-probe.js --target host:port [--count 1000] [--interval 5] [--size 32]
 *        [--wait 1000] [--warmup 0]
 */
import { createSocket } from "node:dgram";
import { PROBE_MAGIC } from "../probe-magic.js";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const [host, portText] = option("target", "").split(":");
const port = Number(portText);
const count = Number(option("count", "1000"));
const intervalMs = Number(option("interval", "5"));
const size = Math.max(16, Number(option("size", "32")));
const waitMs = Number(option("wait", "1000"));
const warmup = Number(option("warmup", "0"));
if (!host || !(port > 0) || !(count > 0) || !(intervalMs >= 0) || !(warmup >= 0)) {
  console.error("usage: latency-probe.js --target host:port [--count N] [--interval MS]");
  process.exit(2);
}

const total = warmup + count;
const sentAt = new Array<bigint>(total);
const rttUs: number[] = [];
const warmupUs = new Array<number>(warmup).fill(-1);
const seen = new Uint8Array(total);
const socket = createSocket({ type: "udp4", recvBufferSize: 1 << 20 });
socket.on("message", (msg) => {
  const now = process.hrtime.bigint();
  if (msg.length !== size || msg.readUInt32BE(0) !== PROBE_MAGIC) return;
  const seq = msg.readUInt32BE(4);
  if (seq >= total || seen[seq] || sentAt[seq] === undefined) return;
  seen[seq] = 1;
  const us = Number(now - sentAt[seq]) / 1000;
  if (seq < warmup) warmupUs[seq] = us;
  else rttUs.push(us);
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
await new Promise<void>((resolve) => socket.bind(0, resolve));
// Sends are paced against a fixed schedule so timer drift does not stretch the run.
const start = performance.now();
for (let seq = 0; seq < total; seq++) {
  const due = start + seq * intervalMs;
  const delay = due - performance.now();
  if (delay > 0) await sleep(delay);
  // A fresh buffer each time: the send completes asynchronously, after this loop moves on.
  const packet = Buffer.alloc(size);
  packet.writeUInt32BE(PROBE_MAGIC, 0);
  packet.writeUInt32BE(seq, 4);
  sentAt[seq] = process.hrtime.bigint();
  socket.send(packet, port, host);
}
const deadline = Date.now() + waitMs;
while (rttUs.length < count && Date.now() < deadline) await sleep(10);
socket.close();
console.log(JSON.stringify({ sent: count, received: rttUs.length, rttUs, warmupUs }));
