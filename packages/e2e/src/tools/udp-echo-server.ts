/**
 * UDP echo application (runs on B): sends every datagram back to its sender unchanged.
 * Prints one JSON line `{"event":"ready"}` when bound, and `{"event":"stats",...}` on SIGUSR1
 * (and keeps running) and on SIGTERM. `forged` counts datagrams carrying the injector's mark
 * (see marker.ts): forgeries that a tunnel delivered to this application.
 *
 * Reads in recvmmsg batches into a 32 MiB receive buffer and answers synchronously, so that a
 * fast stream is echoed whole even when the machine is busy (Node's dgram allocates and
 * schedules per datagram, and its buffer is capped by net.core.rmem_max).
 *
 * Usage: node udp-echo-server.js --port 7000 [--bind 0.0.0.0]
 */
import { UdpBatchSocket } from "fake-tcp-tun/udp";
import { numberArg, parseArgs } from "./args.js";
import { isForged } from "./marker.js";

const args = parseArgs(process.argv.slice(2));
const port = numberArg(args, "port", 7000);
const bind = args.get("bind") ?? "0.0.0.0";
const socket = UdpBatchSocket.bind({
  address: bind,
  port,
  family: 4,
  recvBufferBytes: 32 << 20,
  sendBufferBytes: 32 << 20,
  batchSize: 64,
  // Any UDP datagram: the tests probe the tunnel's size limits with datagrams up to its MTU.
  maxDatagramBytes: 65_536,
});
let datagrams = 0;
let bytes = 0;
let forged = 0;
let sendDrops = 0;
const peers = new Set<number>();

socket.onReceive((batch) => {
  const buffer = batch.buffer;
  for (let i = 0; i < batch.count; i++) {
    const start = batch.start(i);
    const length = batch.length(i);
    datagrams++;
    bytes += length;
    if (isForged(buffer.subarray(start, start + length))) forged++;
    if (peers.size < 10_000) peers.add(batch.key(i));
    if (!socket.send(buffer, start, length, batch.addresses, i)) sendDrops++;
  }
});
function printStats(): void {
  console.log(
    JSON.stringify({ event: "stats", datagrams, bytes, forged, sendDrops, peers: peers.size }),
  );
}
function finish(): void {
  printStats();
  socket.close();
  process.exit(0);
}
process.on("SIGUSR1", printStats);
process.on("SIGTERM", finish);
process.on("SIGINT", finish);
// Ready only once the signals are ours: a SIGUSR1 before that would start Node's inspector.
console.log(JSON.stringify({ event: "ready", port }));
