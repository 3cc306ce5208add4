/**
 * Concurrent-flow set-up probe (runs on A): opens `--flows` UDP sockets (one source port
 * each), sends one datagram from each as fast as it can, and resends from every socket still
 * unanswered each `--retry` ms (a datagram can be lost while its flow is being set up) until
 * every flow got an echo or `--deadline` ms passed. Prints one JSON line:
 * {"flows","answered","datagramsSent","allAnsweredMs","firstReplyMs":[...]} (ms from the first
 * send; null for a flow that never got a reply).
 *
 * Usage: node flow-probe.js --target host:port [--flows 1000] [--retry 250] [--deadline 15000]
 */
import { createSocket, type Socket } from "node:dgram";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const [host, portText] = option("target", "").split(":");
const port = Number(portText);
const flows = Number(option("flows", "1000"));
const retryMs = Number(option("retry", "250"));
const deadlineMs = Number(option("deadline", "15000"));
const SIZE = 64;
if (!host || !(port > 0) || !(flows > 0) || !(retryMs > 0)) {
  console.error("usage: flow-probe.js --target host:port [--flows N] [--retry MS]");
  process.exit(2);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const sockets: Socket[] = await Promise.all(
  Array.from(
    { length: flows },
    () =>
      new Promise<Socket>((resolve, reject) => {
        const s = createSocket("udp4");
        s.once("error", reject);
        s.bind(0, () => resolve(s));
      }),
  ),
);

/** A datagram naming its flow, so a reply that reaches the wrong socket is not counted. */
function datagram(flow: number): Buffer {
  const buf = Buffer.alloc(SIZE);
  buf.writeUInt32BE(0x666c6f77, 0); // "flow"
  buf.writeUInt32BE(flow, 4);
  return buf;
}

const firstReplyMs: Array<number | null> = new Array(flows).fill(null);
let answered = 0;
let sent = 0;
const start = performance.now();
sockets.forEach((s, flow) => {
  s.on("message", (msg) => {
    if (firstReplyMs[flow] !== null || msg.length !== SIZE || msg.readUInt32BE(4) !== flow) return;
    firstReplyMs[flow] = performance.now() - start;
    answered++;
  });
});

while (answered < flows && performance.now() - start < deadlineMs) {
  sockets.forEach((s, flow) => {
    if (firstReplyMs[flow] === null) {
      s.send(datagram(flow), port, host);
      sent++;
    }
  });
  const roundEnd = performance.now() + retryMs;
  while (answered < flows && performance.now() < roundEnd) await sleep(5);
}
for (const s of sockets) s.close();
const times = firstReplyMs.filter((v): v is number => v !== null);
console.log(
  JSON.stringify({
    flows,
    answered,
    datagramsSent: sent,
    allAnsweredMs: answered === flows ? Math.max(...times) : null,
    firstReplyMs,
  }),
);
