/**
 * One UDP socket benchmark run (started by udp-bench.ts inside the benchmark namespace with
 * `ip netns exec`); prints its result as one JSON line. Receive runs are fed by the C sendmmsg
 * flood; send runs are counted by the C recvmmsg sink. All traffic stays on the namespace's
 * loopback.
 */
import dgram from "node:dgram";
import { UdpBatchSocket } from "../udp-socket.js";
import { startFlood } from "./flood.js";
import { SEGMENTED_RUN as RUN } from "./scenario.js";

/** What one run measures. */
export type UdpScenario =
  | { kind: "recv"; api: "batch" | "dgram"; flood: string; seconds: number; port: number }
  | {
      kind: "send";
      api: "batch-single" | "batch-mmsg" | "batch-segmented" | "dgram";
      flood: string;
      seconds: number;
      port: number;
    };

/** UDP payload bytes of every datagram. */
export const DATAGRAM_BYTES = 1400;
const ADDR = "127.0.0.1";
const WARMUP = 0.5;
const BUFFER_BYTES = 4 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measureRecv(s: Extract<UdpScenario, { kind: "recv" }>) {
  let received = 0;
  let batches = 0;
  let close: () => void;
  if (s.api === "batch") {
    const sock = UdpBatchSocket.bind({
      address: ADDR,
      port: s.port,
      family: 4,
      recvBufferBytes: BUFFER_BYTES,
      batchSize: 64,
    });
    sock.onReceive((b) => {
      received += b.count;
      batches++;
    });
    close = () => sock.close();
  } else {
    const sock = dgram.createSocket({ type: "udp4", recvBufferSize: BUFFER_BYTES });
    sock.on("message", () => {
      received++;
    });
    await new Promise<void>((resolve) => sock.bind(s.port, ADDR, resolve));
    batches = Number.NaN;
    close = () => sock.close();
  }
  // IP packet bytes = UDP payload + 28 (IPv4 + UDP headers).
  const flood = startFlood(
    s.flood,
    [
      "send",
      ADDR,
      String(s.port),
      String(DATAGRAM_BYTES + 28),
      String(s.seconds + WARMUP + 0.3),
      "1",
      "1",
    ],
    () => {},
  );
  await sleep(WARMUP * 1000);
  const r0 = received;
  const b0 = batches;
  const t0 = performance.now();
  await sleep(s.seconds * 1000);
  const elapsed = (performance.now() - t0) / 1000;
  const r1 = received;
  const b1 = batches;
  const sent = (await flood.done) as { sent: number; seconds: number };
  close();
  return {
    pps: (r1 - r0) / elapsed,
    avgBatch: (r1 - r0) / (b1 - b0),
    sourcePps: sent.sent / sent.seconds,
  };
}

async function measureSend(s: Extract<UdpScenario, { kind: "send" }>) {
  let ready!: () => void;
  const isReady = new Promise<void>((r) => {
    ready = r;
  });
  const sink = startFlood(
    s.flood,
    ["sink", ADDR, String(s.port), String(s.seconds + WARMUP + 1)],
    (m) => {
      if (m.ready) ready();
    },
  );
  await isReady;
  const payload = Buffer.alloc(DATAGRAM_BYTES, 0x5a);
  let sent = 0;
  let drops = 0;
  const end = performance.now() + (s.seconds + WARMUP) * 1000;
  const warmEnd = performance.now() + WARMUP * 1000;
  let warmSent = -1;
  let t0 = 0;
  let close: () => void;
  // Send in slices of work, yielding to the event loop between them like a real program.
  if (s.api === "dgram") {
    const sock = dgram.createSocket({ type: "udp4", sendBufferSize: BUFFER_BYTES });
    await new Promise<void>((resolve) => sock.bind(0, ADDR, resolve));
    let inFlight = 0;
    const onSent = (err: Error | null) => {
      inFlight--;
      if (err) drops++;
      else sent++;
    };
    while (performance.now() < end) {
      if (warmSent < 0 && performance.now() >= warmEnd) {
        warmSent = sent;
        t0 = performance.now();
      }
      for (let i = 0; i < 64 && inFlight < 1024; i++) {
        inFlight++;
        sock.send(payload, s.port, ADDR, onSent);
      }
      await new Promise((r) => setImmediate(r));
    }
    close = () => sock.close();
  } else {
    const sock = UdpBatchSocket.bind({
      address: ADDR,
      port: 0,
      family: 4,
      sendBufferBytes: BUFFER_BYTES,
    });
    const batch = 64;
    const buffer = Buffer.alloc(DATAGRAM_BYTES * batch, 0x5a);
    const offsets = new Uint32Array(batch * 2);
    const records = new Uint8Array(32 * batch);
    const record = UdpBatchSocket.encodeAddress(ADDR, s.port);
    for (let i = 0; i < batch; i++) {
      offsets[2 * i] = i * DATAGRAM_BYTES;
      offsets[2 * i + 1] = DATAGRAM_BYTES;
      records.set(record, 32 * i);
    }
    while (performance.now() < end) {
      if (warmSent < 0 && performance.now() >= warmEnd) {
        warmSent = sent;
        t0 = performance.now();
      }
      for (let round = 0; round < 16; round++) {
        if (s.api === "batch-mmsg") {
          const n = sock.sendBatch(buffer, offsets, batch, records);
          sent += n;
          drops += batch - n;
        } else if (s.api === "batch-segmented") {
          // All or nothing while the kernel segments (no fallback on loopback).
          if (sock.sendSegmented(buffer, 0, RUN * DATAGRAM_BYTES, DATAGRAM_BYTES, record, 0))
            sent += RUN;
          else drops += RUN;
        } else {
          for (let i = 0; i < batch; i++)
            if (sock.send(payload, 0, DATAGRAM_BYTES, record, 0)) sent++;
            else drops++;
        }
      }
      await new Promise((r) => setImmediate(r));
    }
    close = () => sock.close();
  }
  const elapsed = (performance.now() - t0) / 1000;
  const windowSent = sent - warmSent;
  await sleep(100);
  close();
  const got = (await sink.done) as { received: number };
  return {
    pps: windowSent / elapsed,
    dropPps: drops / (s.seconds + WARMUP),
    delivered: got.received / Math.max(sent, 1),
  };
}

async function main(): Promise<void> {
  const s = JSON.parse(process.argv[2] ?? "{}") as UdpScenario;
  const result = s.kind === "recv" ? await measureRecv(s) : await measureSend(s);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
