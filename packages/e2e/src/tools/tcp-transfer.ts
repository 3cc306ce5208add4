/**
 * TCP bulk transfer with a content checksum, to check a stream inside a tunnel arrives intact.
 *
 * sink:   `--bind ADDR --port N`: accepts one connection, hashes everything it receives,
 *         prints `{"event":"ready"}` when listening and `{"bytes":..,"sha256":..}` at the end.
 * source: `--target host:port --bytes N`: sends N random bytes, prints the same summary.
 */
import { createHash, randomBytes } from "node:crypto";
import { connect, createServer } from "node:net";
import { hostPort, numberArg, parseArgs } from "./args.js";

const mode = process.argv[2];
const args = parseArgs(process.argv.slice(3));

if (mode === "sink") {
  const port = numberArg(args, "port", 5001);
  const server = createServer((sock) => {
    const hash = createHash("sha256");
    let bytes = 0;
    sock.on("data", (chunk) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    sock.on("end", () => {
      console.log(JSON.stringify({ bytes, sha256: hash.digest("hex") }));
      sock.end();
      server.close();
    });
    sock.on("error", (err) => {
      console.log(JSON.stringify({ error: err.message, bytes }));
      process.exit(1);
    });
  });
  server.listen(port, args.get("bind") ?? "0.0.0.0", () => {
    console.log(JSON.stringify({ event: "ready", port }));
  });
} else if (mode === "source") {
  const target = hostPort(args.get("target"), "target");
  const total = numberArg(args, "bytes", 4 << 20);
  const hash = createHash("sha256");
  const sock = connect(target.port, target.host);
  sock.on("connect", async () => {
    let sent = 0;
    while (sent < total) {
      const chunk = randomBytes(Math.min(64 * 1024, total - sent));
      hash.update(chunk);
      sent += chunk.length;
      if (!sock.write(chunk)) await new Promise((r) => sock.once("drain", r));
    }
    sock.end(() => console.log(JSON.stringify({ bytes: sent, sha256: hash.digest("hex") })));
  });
  sock.on("error", (err) => {
    console.log(JSON.stringify({ error: err.message }));
    process.exit(1);
  });
} else {
  console.error("usage: tcp-transfer.js sink|source [options]");
  process.exit(2);
}
