/**
 * `pnpm bench:stack`: datagrams per second through encode + dispatch + decode on one core
 * (1400-byte payloads, each way), the split between encode and decode, and heap per idle
 * established connection.
 */
import { randomBytes } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { ConnectionTable } from "../stack/conn-table.js";
import type { Socket } from "../stack/socket.js";
import { Stack } from "../stack/stack.js";
import { hashTuple } from "../stack/tuple.js";
import { createMemoryPair } from "../testing/memory-pair.js";
import { BATCH, connectedPair, sendRound } from "./connected-pair.js";

const PAYLOAD = 1400;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Runs `round` (which moves BATCH datagrams) for about SECONDS; returns datagrams/s. */
function rate(round: () => void): number {
  for (let i = 0; i < 2000; i++) round(); // warm-up: let the JIT settle
  let n = 0;
  const start = process.hrtime.bigint();
  const budget = BigInt(Math.round(SECONDS * 1e9));
  let elapsed = 0n;
  while (elapsed < budget) {
    for (let i = 0; i < 200; i++) round();
    n += 200 * BATCH;
    elapsed = process.hrtime.bigint() - start;
  }
  return n / (Number(elapsed) / 1e9);
}

async function throughput(offload: boolean, family: 4 | 6, key?: Uint8Array) {
  const { qa, qb, a, b, sa, sb } = await connectedPair(offload, family, key);
  const payload = Buffer.alloc(PAYLOAD, 0x5a);
  let bytes = 0;
  sb.onDatagram((d) => {
    bytes += d.length;
  });
  sa.onDatagram((d) => {
    bytes += d.length;
  });
  const aToB = rate(sendRound(sa, qa, payload));
  const bToA = rate(sendRound(sb, qb, payload));
  // Every datagram sent must have arrived whole, or the figures mean nothing.
  const moved =
    sa.counters.datagramsSent === sb.counters.datagramsReceived &&
    sb.counters.datagramsSent === sa.counters.datagramsReceived &&
    bytes === (sa.counters.datagramsSent + sb.counters.datagramsSent) * PAYLOAD;
  // Encode only: the batch is written, then thrown away.
  const encode = rate(() => {
    for (let i = 0; i < BATCH; i++) sa.send(payload);
    qa.discard();
  });
  // Decode only: one batch of real segments replayed into the receiver.
  for (let i = 0; i < BATCH; i++) sa.send(payload);
  const batch = qa.pending();
  const decode = rate(() => qb.receive(batch));
  qa.discard();
  const ok = moved && sa.counters.datagramsSent > 0 && sb.counters.datagramsSent > 0;
  a.close();
  b.close();
  if (!ok) throw new Error("benchmark moved no data: the figures would be meaningless");
  return { aToB, bToA, encode, decode };
}

async function heapPerConnection(count: number) {
  const pair = createMemoryPair({ mtu: 1500 });
  const client = new Stack({
    queues: pair.a,
    local4: "10.0.0.1",
    maxConnections: count + 10,
  });
  const server = new Stack({
    queues: pair.b,
    local4: "10.0.0.2",
    maxConnections: count + 10,
    // Every connection comes from the one client address.
    maxConnectionsPerSource: count + 10,
    acceptBacklog: count + 10,
  });
  server.listen(4567);
  gc();
  gc();
  const before = process.memoryUsage().heapUsed;
  const kept: Socket[] = [];
  for (let i = 0; i < count; i += 500) {
    const batch: Promise<Socket>[] = [];
    for (let j = 0; j < 500 && i + j < count; j++) batch.push(client.connect("10.0.0.2:4567"));
    kept.push(...(await Promise.all(batch)));
  }
  for (let i = 0; i < count; i++) kept.push(await server.accept());
  await pair.settle();
  gc();
  gc();
  const after = process.memoryUsage().heapUsed;
  const perSocket = (after - before) / kept.length;
  const established = kept.filter((s) => s.established).length;
  client.close();
  server.close();
  return { perSocket, sockets: kept.length, established };
}

/**
 * Why the table key is an integer hash: lookups of 10,000 IPv4 tuples through the connection
 * table versus a Map keyed by a string built from the same tuple per packet.
 */
function dispatchKeys(): { table: number; string: number } {
  const N = 10_000;
  const table = new ConnectionTable();
  const byString = new Map<string, object>();
  const remotes = new Int32Array(N);
  const ports = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    const r0 = (0x0a000000 + i * 7919) | 0;
    const port = 1024 + (i % 60000);
    remotes[i] = r0;
    ports[i] = port;
    const fake = {
      family: 4,
      r0,
      l0: 0x0a000001,
      remotePort: port,
      localPort: 4567,
      hash: hashTuple(r0, 0, 0, 0, port, 4567),
      nextInBucket: null,
    } as unknown as Socket;
    table.insert(fake);
    byString.set(`${r0}:${port}:${167772161}:4567`, fake);
  }
  let hits = 0;
  const t = rate(() => {
    for (let i = 0; i < BATCH; i++) {
      const k = (hits + i) % N;
      if (table.find4(remotes[k], 0x0a000001, ports[k], 4567) !== null) hits++;
    }
  });
  const s = rate(() => {
    for (let i = 0; i < BATCH; i++) {
      const k = (hits + i) % N;
      if (byString.get(`${remotes[k]}:${ports[k]}:${167772161}:4567`) !== undefined) hits++;
    }
  });
  if (hits === 0) throw new Error("lookups found nothing");
  return { table: t, string: s };
}

function fmt(n: number): string {
  return `${(n / 1e6).toFixed(2)} M/s`;
}

async function main() {
  console.log(
    `fake-tcp stack benchmark: Node ${process.version}, ${PAYLOAD}-byte payloads, batches of ${BATCH}, ${SECONDS} s per figure, one core`,
  );
  for (const [offload, family] of [
    [true, 4],
    [false, 4],
    [true, 6],
  ] as const) {
    const r = await throughput(offload, family);
    console.log(
      `IPv${family}, ${offload ? "checksum offload (seed only)" : "full TCP checksum in JS"}: ` +
        `A->B ${fmt(r.aToB)}, B->A ${fmt(r.bToA)} datagrams/s (encode+dispatch+decode); ` +
        `encode only ${fmt(r.encode)}, decode+dispatch only ${fmt(r.decode)}`,
    );
  }
  // Keyed mode changes the handshake only: its data path must run at the same rate. Rounds
  // alternate so that a slow spell of a shared machine hits both alike; medians compared.
  const unkeyed: number[] = [];
  const keyed: number[] = [];
  const key = new Uint8Array(randomBytes(32));
  for (let round = 0; round < 6; round++) {
    // Which goes first alternates too: the second of a pair runs on a warmer heap.
    const withKey = round % 2 === 0;
    const first = await throughput(true, 4, withKey ? key : undefined);
    const second = await throughput(true, 4, withKey ? undefined : key);
    (withKey ? keyed : unkeyed).push(first.aToB + first.bToA);
    (withKey ? unkeyed : keyed).push(second.aToB + second.bToA);
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(
    `IPv4, checksum offload, keyed vs unkeyed (6 alternating rounds, medians of A->B + B->A): ` +
      `unkeyed ${fmt(median(unkeyed))}, keyed ${fmt(median(keyed))}, ratio ${(median(keyed) / median(unkeyed)).toFixed(3)} ` +
      `(rounds: unkeyed ${unkeyed.map((x) => (x / 1e6).toFixed(2)).join(" ")}, keyed ${keyed.map((x) => (x / 1e6).toFixed(2)).join(" ")})`,
  );
  const k = dispatchKeys();
  console.log(
    `dispatch lookups among 10,000 tuples: integer-hash table ${fmt(k.table)}, string-keyed Map ${fmt(k.string)}`,
  );
  const h = await heapPerConnection(10_000);
  console.log(
    `heap per idle established socket: ${h.perSocket.toFixed(0)} bytes ` +
      `(${h.sockets} sockets = 10,000 connections seen from both ends, ${h.established} established)`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
