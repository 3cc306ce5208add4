/**
 * UDP echo application (runs on B): sends every datagram back to its sender unchanged.
 * Prints one JSON line `{"event":"ready"}` when bound, and `{"event":"stats",...}` on SIGTERM.
 *
 * Usage: node udp-echo-server.js --port 7000 [--bind 0.0.0.0]
 */
import { createSocket } from "node:dgram";
import { numberArg, parseArgs } from "./args.js";

const args = parseArgs(process.argv.slice(2));
const port = numberArg(args, "port", 7000);
const bind = args.get("bind") ?? "0.0.0.0";
const socket = createSocket({ type: "udp4", recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
let datagrams = 0;
let bytes = 0;
const peers = new Set<string>();

socket.on("message", (msg, rinfo) => {
  datagrams++;
  bytes += msg.length;
  if (peers.size < 10_000) peers.add(`${rinfo.address}:${rinfo.port}`);
  socket.send(msg, rinfo.port, rinfo.address);
});
socket.on("error", (err) => {
  console.log(JSON.stringify({ event: "error", message: err.message }));
});
socket.bind(port, bind, () => {
  console.log(JSON.stringify({ event: "ready", port }));
});

function finish(): void {
  console.log(JSON.stringify({ event: "stats", datagrams, bytes, peers: peers.size }));
  process.exit(0);
}
process.on("SIGTERM", finish);
process.on("SIGINT", finish);
