/**
 * Many-connection probe (runs on A), for `pnpm bench --connections N`. Three phases:
 *
 * 1. Set-up: binds `--connections` UDP sockets (one source port, so one tunnel connection,
 *    each), sends a 64-byte datagram from every one, all at once or `--pace` new sockets a
 *    second, and resends from each socket still unanswered `--retry` ms after its last send,
 *    until each got its echo or `--deadline` ms passed.
 *    Prints `{"event":"established",...}` (see {@link SetupFigures}).
 * 2. Hold: waits for SIGUSR2 (the bench reads the programs' memory and stats meanwhile; all
 *    connections are open and idle), at most `--hold` ms.
 * 3. Load: for each flow count of `--load-flows` and each rate of `--load-mbps`, sends
 *    `--size`-byte datagrams for `--load-seconds` at that rate, spread round-robin over that
 *    many of the open sockets (runs of up to 8 datagrams per socket, one UDP_SEGMENT send
 *    each), and counts the echoes. Prints `{"event":"load","steps":[...]}` and exits.
 *
 * The sockets are the addon's (recvmmsg, synchronous sendmsg) sharing one receive area, a few
 * KiB each: Node's dgram would cost the probe more CPU than the tunnel it measures. Node raises its soft
 * RLIMIT_NOFILE to the hard limit at start; the probe checks that the sockets fit.
 *
 * Usage: node conn-probe.js --target host:port [--connections 10000] [--pace 0] [--retry 250]
 *        [--deadline 60000] [--hold 60000] [--load-flows 1,1000] [--load-mbps 200,400]
 *        [--load-seconds 3] [--size 1400]
 */
import { UdpBatchSocket, UdpReceiveArea } from "fake-tcp-tun/udp";
import type { LoadStep } from "../conn-probe-output.js";
import { listOption, nofileLimit } from "./conn-probe-args.js";

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const [host, portText] = option("target", "").split(":");
const port = Number(portText);
const connections = Number(option("connections", "10000"));
const retryMs = Number(option("retry", "250"));
const deadlineMs = Number(option("deadline", "60000"));
const holdMs = Number(option("hold", "60000"));
const loadFlows = listOption(option("load-flows", "1,1000"));
const loadMbps = listOption(option("load-mbps", "200,400"));
const loadSeconds = Number(option("load-seconds", "3"));
const size = Number(option("size", "1400"));
/** New flows per second in set-up (0: all at once). */
const pace = Number(option("pace", "0"));
const SETUP_SIZE = 64;
/** Datagrams per UDP_SEGMENT send in the load phase. */
const RUN = 8;
if (
  !host ||
  !(port > 0) ||
  !(connections > 0) ||
  !(retryMs > 0) ||
  !(size > SETUP_SIZE) ||
  !(pace >= 0)
) {
  console.error("usage: conn-probe.js --target host:port [--connections N] [--retry MS] ...");
  process.exit(2);
}
if (loadFlows.some((n) => n > connections)) {
  console.error(`conn-probe: --load-flows ${loadFlows.join(",")} exceeds --connections`);
  process.exit(2);
}
const limit = nofileLimit();
if (limit !== null && connections + 64 > limit) {
  console.error(
    `conn-probe: ${connections} sockets need more than the open-file limit ${limit}; raise it (ulimit -n) or use fewer`,
  );
  process.exit(2);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const start = performance.now();
const firstReplyMs = new Float64Array(connections).fill(-1);
let answered = 0;
/** Echoes of load datagrams (size `size`), counted per step. */
let loadEchoes = 0;

const sockets: UdpBatchSocket[] = [];
const area = new UdpReceiveArea(64, 2048);
for (let flow = 0; flow < connections; flow++) {
  const s = UdpBatchSocket.bind({
    address: "0.0.0.0",
    port: 0,
    family: 4,
    // Room for a fast single flow's echoes (a limit: memory is taken only when used).
    recvBufferBytes: 4 << 20,
    receiveArea: area,
  });
  s.connect(host, port);
  s.onReceive((batch) => {
    for (let i = 0; i < batch.count; i++) {
      const length = batch.length(i);
      if (length === size) loadEchoes++;
      else if (length === SETUP_SIZE && firstReplyMs[flow] < 0) {
        const at = batch.start(i);
        if (batch.buffer.readUInt32BE(at + 4) !== flow) continue;
        firstReplyMs[flow] = performance.now() - start;
        answered++;
      }
    }
  });
  sockets.push(s);
}
const bindMs = performance.now() - start;

/** A set-up datagram naming its flow, so an echo reaching the wrong socket is not counted. */
const setup = Buffer.alloc(SETUP_SIZE);
setup.writeUInt32BE(0x666c6f77, 0); // "flow"
let setupSent = 0;
/** [ms since the first send, connections answered] about once a second: how set-up progressed. */
const progress: Array<[number, number]> = [];
/** When each flow last sent its set-up datagram (-1: not yet). */
const lastSentAt = new Float64Array(connections).fill(-1);
/** When each flow first sent, in ms since `start` (its set-up latency starts there). */
const firstSentAt = new Float64Array(connections).fill(-1);
const setupStart = performance.now();
let nextProgress = 1000;
while (answered < connections && performance.now() - setupStart < deadlineMs) {
  const now = performance.now();
  const elapsed = now - setupStart;
  // Paced: flow i starts at i / pace seconds; unpaced, every flow starts at once.
  const due =
    pace > 0 ? Math.min(connections, Math.floor((elapsed * pace) / 1000) + 1) : connections;
  for (let flow = 0; flow < due; flow++) {
    if (firstReplyMs[flow] >= 0) continue;
    if (lastSentAt[flow] >= 0 && now - lastSentAt[flow] < retryMs) continue;
    setup.writeUInt32BE(flow, 4);
    sockets[flow].send(setup);
    if (lastSentAt[flow] < 0) firstSentAt[flow] = now - start;
    lastSentAt[flow] = now;
    setupSent++;
  }
  if (elapsed >= nextProgress) {
    progress.push([Math.round(elapsed), answered]);
    nextProgress += 1000;
  }
  await sleep(10);
}
progress.push([Math.round(performance.now() - setupStart), answered]);
/** Per connection: from its first datagram to its first echo. */
const times = Array.from(firstReplyMs)
  .map((v, flow) => (v >= 0 ? v - firstSentAt[flow] : -1))
  .filter((v) => v >= 0)
  .sort((a, b) => a - b);
let lastReply = 0;
for (const v of firstReplyMs) lastReply = Math.max(lastReply, v - (setupStart - start));
const at = (q: number) =>
  times.length ? times[Math.min(times.length - 1, Math.floor(q * times.length))] : null;
console.log(
  JSON.stringify({
    event: "established",
    connections,
    pace,
    answered,
    datagramsSent: setupSent,
    bindMs: Math.round(bindMs),
    allAnsweredMs: answered === connections ? Math.round(lastReply) : null,
    medianFirstReplyMs: at(0.5) === null ? null : Math.round(at(0.5) ?? 0),
    p90FirstReplyMs: at(0.9) === null ? null : Math.round(at(0.9) ?? 0),
    progress,
  }),
);

// Hold until the bench has read what it needs (SIGUSR2), or the hold time passed.
await new Promise<void>((resolve) => {
  const timer = setTimeout(resolve, holdMs);
  process.once("SIGUSR2", () => {
    clearTimeout(timer);
    resolve();
  });
});

const payload = Buffer.alloc(size * RUN);
for (let i = 0; i < RUN; i++) payload.writeUInt32BE(0x6c6f6164, i * size); // "load"

async function loadStep(flows: number, mbps: number): Promise<LoadStep> {
  const perSecond = (mbps * 1e6) / (size * 8);
  loadEchoes = 0;
  let sent = 0;
  let drops = 0;
  let next = 0;
  let owed = 0;
  const begin = performance.now();
  const end = begin + loadSeconds * 1000;
  let last = begin;
  while (true) {
    const now = performance.now();
    if (now >= end) break;
    // A timer held up by a busy machine is made up for only up to 5 ms worth: a longer stall
    // is lost (the sent rate says so), not sent as one burst that would overflow receivers.
    owed = Math.min(owed + ((now - last) * perSecond) / 1000, Math.max(RUN, perSecond / 200));
    last = now;
    while (owed >= 1) {
      const n = Math.min(RUN, Math.floor(owed));
      if (!sockets[next].sendSegmented(payload, 0, n * size, size)) drops += n;
      sent += n;
      owed -= n;
      next = (next + 1) % flows;
    }
    await sleep(1);
  }
  const elapsed = (performance.now() - begin) / 1000;
  // Echoes still in flight come back within a moment.
  await sleep(500);
  const echoed = loadEchoes;
  return {
    flows,
    offeredMbps: mbps,
    seconds: Math.round(elapsed * 100) / 100,
    sent,
    sendDrops: drops,
    sentMbps: Math.round((sent * size * 8) / elapsed / 1e4) / 100,
    echoed,
    echoedMbps: Math.round((echoed * size * 8) / elapsed / 1e4) / 100,
    lossPercent: sent > 0 ? Math.round((1 - echoed / sent) * 10000) / 100 : 0,
  };
}

const steps: LoadStep[] = [];
for (const flows of loadFlows) {
  for (const mbps of loadMbps) steps.push(await loadStep(flows, mbps));
}
for (const s of sockets) s.close();
console.log(JSON.stringify({ event: "load", size, steps }));
process.exit(0);
