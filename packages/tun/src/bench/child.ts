/**
 * Runs one benchmark scenario inside the benchmark namespace (started by tun-bench.ts with
 * `ip netns exec`) and prints its result as one JSON line.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { TunDevice } from "../device.js";
import { startFlood } from "./flood.js";
import {
  BENCH_PORT,
  BENCH_V4,
  PACKET_BYTES,
  type Scenario,
  SEGMENTS_PER_CALL,
  SINK_V4,
  WARMUP_SECONDS,
} from "./scenario.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An IPv4/UDP packet of `size` bytes from the peer to the local address (UDP checksum 0). */
function udpToLocal(size: number, sport: number): Buffer {
  const p = Buffer.alloc(size);
  p[0] = 0x45;
  p.writeUInt16BE(size, 2);
  p[8] = 64;
  p[9] = 17;
  Buffer.from(BENCH_V4.peer.split(".").map(Number)).copy(p, 12);
  Buffer.from(BENCH_V4.local.split(".").map(Number)).copy(p, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += p.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  p.writeUInt16BE(~sum & 0xffff, 10);
  p.writeUInt16BE(sport, 20);
  p.writeUInt16BE(BENCH_PORT, 22);
  p.writeUInt16BE(size - 20, 24);
  return p;
}

async function measureRead(s: Extract<Scenario, { kind: "read" | "source" }>) {
  const batchSize = s.kind === "read" ? s.batchSize : 64;
  const workers = s.kind === "read" ? s.workers : 0;
  const dev = TunDevice.open({ name: "ftbench0", ipv4: BENCH_V4, multiQueue: true, batchSize });
  const shared = new SharedArrayBuffer(24 * Math.max(workers, 1));
  const counters = new Float64Array(shared);
  const threads: Worker[] = [];
  if (s.kind === "read" && workers === 0) {
    dev.queues[0].onReceive((batch) => {
      let sum = 0;
      for (let i = 0; i < batch.count; i++) sum += batch.offsets[2 * i + 1];
      counters[0] += batch.count;
      counters[1] += sum > 0 ? 1 : 0;
    });
  } else if (workers > 0) {
    for (let i = 0; i < workers; i++) {
      const w = new Worker(new URL("./read-worker.js", import.meta.url), {
        workerData: { name: dev.name, batchSize, index: i, shared, waitForGo: false },
      });
      await new Promise((resolve) => w.once("message", resolve));
      threads.push(w);
    }
    dev.queues[0].close(); // only the workers' queues remain, so all traffic goes to them
  }
  // "source": the device's queue is open but never read: the kernel drops at the TUN ring.
  const total = () => {
    let packets = 0;
    let batches = 0;
    for (let i = 0; i < Math.max(workers, 1); i++) {
      packets += counters[3 * i];
      batches += counters[3 * i + 1];
    }
    return { packets, batches, t: performance.now() };
  };
  const flood = startFlood(
    s.flood,
    [
      "send",
      BENCH_V4.peer,
      String(BENCH_PORT),
      String(PACKET_BYTES),
      String(s.seconds + WARMUP_SECONDS + 0.3),
      String(s.flows),
      String(s.threads),
    ],
    () => {},
  );
  await sleep(WARMUP_SECONDS * 1000);
  const a = total();
  await sleep(s.seconds * 1000);
  const b = total();
  const sent = await flood.done;
  for (const w of threads) {
    const exited = new Promise((resolve) => w.once("exit", resolve));
    w.postMessage("stop");
    await exited;
  }
  dev.close();
  const seconds = (b.t - a.t) / 1000;
  return {
    readPps: (b.packets - a.packets) / seconds,
    avgBatch: b.batches > a.batches ? (b.packets - a.packets) / (b.batches - a.batches) : 0,
    sourcePps: (sent.sent as number) / (sent.seconds as number),
  };
}

/**
 * Reader capacity without a competing source: fill each queue's ring (txqueuelen packets)
 * while nobody reads, stop the source, then time how fast the reader(s) empty it.
 */
async function measureDrain(s: Extract<Scenario, { kind: "drain" }>) {
  const { workers, batchSize } = s;
  const dev = TunDevice.open({
    name: "ftbench0",
    ipv4: BENCH_V4,
    multiQueue: true,
    batchSize,
    txqueuelen: s.fill,
  });
  const slots = Math.max(workers, 1);
  const shared = new SharedArrayBuffer(24 * slots);
  const counters = new Float64Array(shared);
  const threads: Worker[] = [];
  for (let i = 0; i < workers; i++) {
    const w = new Worker(new URL("./read-worker.js", import.meta.url), {
      workerData: { name: dev.name, batchSize, index: i, shared, waitForGo: true },
    });
    await new Promise((resolve) => w.once("message", resolve));
    threads.push(w);
  }
  if (workers > 0) dev.queues[0].close();
  // Offer far more than the rings hold, so every ring is full when the source stops.
  const flood = startFlood(
    s.flood,
    ["send", BENCH_V4.peer, String(BENCH_PORT), String(PACKET_BYTES), "1.0", "8", "1"],
    () => {},
  );
  await flood.done;
  const start = performance.timeOrigin + performance.now();
  if (workers === 0) {
    dev.queues[0].onReceive((batch) => {
      let sum = 0;
      for (let i = 0; i < batch.count; i++) sum += batch.offsets[2 * i + 1];
      counters[0] += batch.count;
      counters[1] += sum > 0 ? 1 : 0;
      counters[2] = performance.timeOrigin + performance.now();
    });
  } else {
    for (const w of threads) w.postMessage("go");
  }
  // Done when nothing more arrives for 200 ms (bounded by 20 s).
  let last = -1;
  for (let i = 0; i < 200; i++) {
    await sleep(100);
    let packets = 0;
    for (let q = 0; q < slots; q++) packets += counters[3 * q];
    if (packets === last) break;
    last = packets;
  }
  let packets = 0;
  let batches = 0;
  let end = start;
  for (let q = 0; q < slots; q++) {
    packets += counters[3 * q];
    batches += counters[3 * q + 1];
    end = Math.max(end, counters[3 * q + 2]);
  }
  for (const w of threads) {
    const exited = new Promise((resolve) => w.once("exit", resolve));
    w.postMessage("stop");
    await exited;
  }
  dev.close();
  return {
    drained: packets,
    drainPps: packets / ((end - start) / 1000),
    avgBatch: batches > 0 ? packets / batches : 0,
  };
}

async function measureWrite(s: Extract<Scenario, { kind: "write" }>) {
  const dev = TunDevice.open({ name: "ftbench0", ipv4: BENCH_V4 });
  const q = dev.queues[0];
  let ready!: () => void;
  const sinkReady = new Promise<void>((r) => {
    ready = r;
  });
  const sink = startFlood(
    s.flood,
    ["sink", BENCH_V4.local, String(BENCH_PORT), String(s.seconds + 1.5)],
    (m) => m.ready && ready(),
  );
  await sinkReady;
  const N = 64;
  const packets = Array.from({ length: N }, (_, i) => udpToLocal(PACKET_BYTES, 20000 + i));
  const headers = packets.map((p) => p.subarray(0, 28));
  const payloads = packets.map((p) => p.subarray(28));
  const flat = Buffer.concat(packets);
  const offsets = new Uint32Array(2 * N);
  for (let i = 0; i < N; i++) {
    offsets[2 * i] = i * PACKET_BYTES;
    offsets[2 * i + 1] = PACKET_BYTES;
  }
  const start = performance.now();
  const end = start + s.seconds * 1000;
  let now = start;
  while (now < end) {
    for (let round = 0; round < 16; round++) {
      if (s.mode === "single") for (let i = 0; i < N; i++) q.write(packets[i]);
      else if (s.mode === "gather")
        for (let i = 0; i < N; i++) q.writeGather(headers[i], payloads[i]);
      else q.writeBatch(flat, offsets, N);
    }
    now = performance.now();
  }
  const stats = q.stats();
  const seconds = (now - start) / 1000;
  const received = await sink.done;
  dev.close();
  return {
    writePps: stats.packetsWritten / seconds,
    dropPps: stats.writeDrops / seconds,
    deliveredPps: (received.received as number) / seconds,
  };
}

/** Header (IPv4 + TCP, partial checksum seed) of a segment run of `payloadBytes` bytes. */
function tcpHeader(payloadBytes: number): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x45;
  h.writeUInt16BE(40 + payloadBytes, 2);
  h.writeUInt16BE(0x4000, 6);
  h[8] = 64;
  h[9] = 6;
  const src = Buffer.from(BENCH_V4.peer.split(".").map(Number));
  const dst = Buffer.from(SINK_V4.peer.split(".").map(Number));
  src.copy(h, 12);
  dst.copy(h, 16);
  const fold = (x: number) => {
    let v = x;
    while (v > 0xffff) v = (v & 0xffff) + (v >>> 16);
    return v;
  };
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += h.readUInt16BE(i);
  h.writeUInt16BE(~fold(sum) & 0xffff, 10);
  h.writeUInt16BE(40000, 20);
  h.writeUInt16BE(BENCH_PORT, 22);
  h.writeUInt32BE(1, 24);
  h.writeUInt32BE(1, 28);
  h[32] = 0x50;
  h[33] = 0x10; // ACK
  h.writeUInt16BE(65535, 34);
  let seed = 6 + 20 + payloadBytes;
  for (let i = 0; i < 4; i += 2) seed += src.readUInt16BE(i) + dst.readUInt16BE(i);
  h.writeUInt16BE(fold(seed), 36);
  return h;
}

const readCounter = (name: string, counter: string) =>
  Number(readFileSync(`/sys/class/net/${name}/statistics/${counter}`, "utf8"));

/**
 * TCP segments into the kernel: writeGather per segment against writeSegmented runs. The
 * kernel forwards them to a second TUN that nobody reads (no offload, so it segments runs in
 * software there) and drops them when its ring is full: the cost measured is getting segments
 * into and through the kernel, not a reader.
 */
async function measureTcpWrite(s: Extract<Scenario, { kind: "tcpwrite" }>) {
  writeFileSync("/proc/sys/net/ipv4/ip_forward", "1");
  writeFileSync("/proc/sys/net/ipv4/conf/all/rp_filter", "0");
  writeFileSync("/proc/sys/net/ipv4/conf/default/rp_filter", "0");
  const dev = TunDevice.open({ name: "ftbench0", ipv4: BENCH_V4, vnetHdr: true });
  const sink = TunDevice.open({ name: "ftbench1", ipv4: SINK_V4, txqueuelen: 1000 });
  const q = dev.queues[0];
  const N = SEGMENTS_PER_CALL;
  const payload = Buffer.alloc(PACKET_BYTES * N, 0x5a);
  const single = tcpHeader(PACKET_BYTES);
  const segment = payload.subarray(0, PACKET_BYTES);
  const run = tcpHeader(PACKET_BYTES * N);
  const egress = () =>
    readCounter("ftbench1", "tx_packets") + readCounter("ftbench1", "tx_dropped");
  const before = q.stats();
  const egress0 = egress();
  const start = performance.now();
  const end = start + s.seconds * 1000;
  let now = start;
  while (now < end) {
    for (let round = 0; round < 16; round++) {
      if (s.mode === "gather") for (let i = 0; i < N; i++) q.writeGather(single, segment, true);
      else q.writeSegmented(run, payload, PACKET_BYTES);
    }
    now = performance.now();
  }
  const stats = q.stats();
  const seconds = (now - start) / 1000;
  const egressed = egress() - egress0;
  dev.close();
  sink.close();
  return {
    segmentsPps: (stats.packetsWritten - before.packetsWritten) / seconds,
    callsPs:
      (s.mode === "gather"
        ? stats.packetsWritten - before.packetsWritten
        : stats.segmentedWrites - before.segmentedWrites) / seconds,
    dropPps: (stats.writeDrops - before.writeDrops) / seconds,
    egressPps: egressed / seconds,
  };
}

const scenario = JSON.parse(process.argv[2]) as Scenario;
const result =
  scenario.kind === "write"
    ? await measureWrite(scenario)
    : scenario.kind === "tcpwrite"
      ? await measureTcpWrite(scenario)
      : scenario.kind === "drain"
        ? await measureDrain(scenario)
        : await measureRead(scenario);
process.stdout.write(`${JSON.stringify(result)}\n`);
