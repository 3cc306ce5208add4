/**
 * One-way UDP flows with every datagram accounted for, for tests that need traffic in one
 * direction only (an echo would answer every datagram and so make every flow two-way).
 *
 * sink (on B): `--port P`. Counts the numbered datagrams it receives, per run. A PUSH
 *   request (`push` mode below) makes it stream numbered datagrams back to the requester.
 *   Prints `{"msg":"ready"}` once bound and `{"msg":"flow stats","runs":{...}}` on SIGUSR1
 *   and SIGTERM; a run's entry: received, distinct (sequence numbers), highest (sequence
 *   number), pushed.
 * up (on A): `--target H:P --run ID --count N --interval MS [--size S --bind-port P]`:
 *   sends N numbered datagrams, prints `{"sent":N}`.
 * down (on A): `--target H:P --run ID --count N --interval MS [--size S --bind-port P
 *   --wait MS]`: asks the sink (through the target) to send N datagrams, one per interval,
 *   and counts them; prints `{"received":..,"distinct":..}` once all came or `--wait` ms
 *   after the last was due.
 * With the same --bind-port, successive runs of A share one source address, hence one
 * tunnel connection.
 *
 * Usage: node udp-flow.js sink|up|down [options]
 */
import { createSocket, type Socket } from "node:dgram";
import { hostPort, numberArg, parseArgs } from "./args.js";

/** Datagram kinds (first 4 bytes). */
const DATA = 0x44415441; // "DATA": run, seq, padding
const PUSH = 0x50555348; // "PUSH": run, count, interval, size

const mode = process.argv[2];
const args = parseArgs(process.argv.slice(3));

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function data(run: number, seq: number, size: number): Buffer {
  const b = Buffer.alloc(Math.max(12, size));
  b.writeUInt32BE(DATA, 0);
  b.writeUInt32BE(run, 4);
  b.writeUInt32BE(seq, 8);
  return b;
}

/** Sends `count` numbered datagrams of run `run`, one per `interval` ms (catching up if late). */
async function stream(
  send: (b: Buffer) => void,
  run: number,
  count: number,
  interval: number,
  size: number,
): Promise<void> {
  const start = Date.now();
  for (let seq = 0; seq < count; seq++) {
    const due = start + seq * interval;
    const now = Date.now();
    if (due > now) await sleep(due - now);
    send(data(run, seq, size));
  }
}

function bound(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
    s.once("error", reject);
    s.bind(port, () => resolve(s));
  });
}

async function sink(): Promise<void> {
  const s = await bound(numberArg(args, "port", 7000));
  const runs = new Map<
    number,
    { received: number; seen: Set<number>; highest: number; pushed: number }
  >();
  const entry = (run: number) => {
    let e = runs.get(run);
    if (!e) {
      e = { received: 0, seen: new Set(), highest: -1, pushed: 0 };
      runs.set(run, e);
    }
    return e;
  };
  s.on("message", (msg, from) => {
    if (msg.length < 12) return;
    const kind = msg.readUInt32BE(0);
    const run = msg.readUInt32BE(4);
    if (kind === DATA) {
      const e = entry(run);
      const seq = msg.readUInt32BE(8);
      e.received++;
      e.seen.add(seq);
      e.highest = Math.max(e.highest, seq);
    } else if (kind === PUSH && msg.length >= 20) {
      const e = entry(run);
      const count = msg.readUInt32BE(8);
      const interval = msg.readUInt32BE(12);
      const size = msg.readUInt32BE(16);
      void stream(
        (b) => {
          e.pushed++;
          s.send(b, from.port, from.address);
        },
        run,
        count,
        interval,
        size,
      );
    }
  });
  const report = () =>
    console.log(
      JSON.stringify({
        msg: "flow stats",
        runs: Object.fromEntries(
          [...runs].map(([run, e]) => [
            run,
            { received: e.received, distinct: e.seen.size, highest: e.highest, pushed: e.pushed },
          ]),
        ),
      }),
    );
  process.on("SIGUSR1", report);
  const finish = () => {
    report();
    process.exit(0);
  };
  process.on("SIGTERM", finish);
  process.on("SIGINT", finish);
  console.log(JSON.stringify({ msg: "ready", port: s.address().port }));
}

async function up(): Promise<void> {
  const target = hostPort(args.get("target"), "target");
  const s = await bound(numberArg(args, "bind-port", 0));
  const count = numberArg(args, "count", 100);
  await stream(
    (b) => s.send(b, target.port, target.host),
    numberArg(args, "run", 1),
    count,
    numberArg(args, "interval", 5),
    numberArg(args, "size", 64),
  );
  await sleep(50); // let the last sends leave before the socket closes
  s.close();
  console.log(JSON.stringify({ sent: count }));
}

async function down(): Promise<void> {
  const target = hostPort(args.get("target"), "target");
  const s = await bound(numberArg(args, "bind-port", 0));
  const run = numberArg(args, "run", 1);
  const count = numberArg(args, "count", 100);
  const interval = numberArg(args, "interval", 5);
  const seen = new Set<number>();
  let received = 0;
  s.on("message", (msg) => {
    if (msg.length < 12 || msg.readUInt32BE(0) !== DATA || msg.readUInt32BE(4) !== run) return;
    received++;
    seen.add(msg.readUInt32BE(8));
  });
  const request = Buffer.alloc(20);
  request.writeUInt32BE(PUSH, 0);
  request.writeUInt32BE(run, 4);
  request.writeUInt32BE(count, 8);
  request.writeUInt32BE(interval, 12);
  request.writeUInt32BE(numberArg(args, "size", 64), 16);
  s.send(request, target.port, target.host);
  const deadline = Date.now() + count * interval + numberArg(args, "wait", 3_000);
  while (seen.size < count && Date.now() < deadline) await sleep(20);
  s.close();
  console.log(JSON.stringify({ received, distinct: seen.size }));
}

if (mode === "sink") await sink();
else if (mode === "up") await up();
else if (mode === "down") await down();
else {
  console.error("usage: udp-flow.js sink|up|down [options]");
  process.exit(2);
}
