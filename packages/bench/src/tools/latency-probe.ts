/**
 * UDP round-trip probe (runs on A): sends `--count` datagrams of `--size` bytes, one every
 * `--interval` ms, to an echo application and times each echo with the monotonic clock.
 * Each datagram starts with the PROBE_MAGIC word (so the rig's app host can steer probes to
 * the echo application while iperf3 holds the app port) and its sequence number.
 * Prints one JSON line: {"sent","received","rttUs":[...]} (round trips in microseconds).
 *
 * Usage: node latency-probe.js --target host:port [--count 1000] [--interval 5] [--size 32]
 *        [--wait 1000]
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
if (!host || !(port > 0) || !(count > 0) || !(intervalMs >= 0)) {
  console.error("usage: latency-probe.js --target host:port [--count N] [--interval MS]");
  process.exit(2);
}

const sentAt = new Array<bigint>(count);
const rttUs: number[] = [];
const seen = new Uint8Array(count);
const socket = createSocket({ type: "udp4", recvBufferSize: 1 << 20 });
socket.on("message", (msg) => {
  const now = process.hrtime.bigint();
  if (msg.length !== size || msg.readUInt32BE(0) !== PROBE_MAGIC) return;
  const seq = msg.readUInt32BE(4);
  if (seq >= count || seen[seq] || sentAt[seq] === undefined) return;
  seen[seq] = 1;
  rttUs.push(Number(now - sentAt[seq]) / 1000);
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
await new Promise<void>((resolve) => socket.bind(0, resolve));
// Sends are paced against a fixed schedule so timer drift does not stretch the run.
const start = performance.now();
for (let seq = 0; seq < count; seq++) {
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
console.log(JSON.stringify({ sent: count, received: rttUs.length, rttUs }));
