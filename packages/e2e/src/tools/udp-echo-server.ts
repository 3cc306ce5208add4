/**
 * UDP echo application (runs on B): sends every datagram back to its sender unchanged.
 * Prints one JSON line `{"event":"ready"}` when bound, and `{"event":"stats",...}` on SIGUSR1
 * (and keeps running) and on SIGTERM. `forged` counts datagrams carrying the injector's mark
 * (see marker.ts): forgeries that a tunnel delivered to this application.
 *
 * Usage: node udp-echo-server.js --port 7000 [--bind 0.0.0.0]
 */
import { createSocket } from "node:dgram";
import { numberArg, parseArgs } from "./args.js";
import { isForged } from "./marker.js";

const args = parseArgs(process.argv.slice(2));
const port = numberArg(args, "port", 7000);
const bind = args.get("bind") ?? "0.0.0.0";
const socket = createSocket({ type: "udp4", recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
let datagrams = 0;
let bytes = 0;
let forged = 0;
const peers = new Set<string>();

socket.on("message", (msg, rinfo) => {
  datagrams++;
  bytes += msg.length;
  if (isForged(msg)) forged++;
  if (peers.size < 10_000) peers.add(`${rinfo.address}:${rinfo.port}`);
  socket.send(msg, rinfo.port, rinfo.address);
});
socket.on("error", (err) => {
  console.log(JSON.stringify({ event: "error", message: err.message }));
});
socket.bind(port, bind, () => {
  console.log(JSON.stringify({ event: "ready", port }));
});

function printStats(): void {
  console.log(JSON.stringify({ event: "stats", datagrams, bytes, forged, peers: peers.size }));
}
function finish(): void {
  printStats();
  process.exit(0);
}
process.on("SIGUSR1", printStats);
process.on("SIGTERM", finish);
process.on("SIGINT", finish);
