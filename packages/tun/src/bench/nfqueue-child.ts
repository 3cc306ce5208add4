/**
 * The processes of `pnpm bench:nfqueue`, one role each, started by nfqueue-bench.ts inside the
 * benchmark's namespaces: `node nfqueue-child.js ROLE JSON`. Each prints "ready" (as JSON) when
 * set up and its JSON result on SIGTERM (or when its own time bound runs out).
 *
 * - verdict: the queue program. Marks SYNs that carry the marker option, accepts the rest
 *   unchanged; reports packets, the time between its first and last batch, and its CPU time.
 * - listener: the port's real service (node:net), counting accepted connections.
 * - prober: a real client of that service, one connection attempt every `intervalMs`.
 */
import net from "node:net";
import { performance } from "node:perf_hooks";
import { NfQueue } from "../nfqueue.js";

type Args = Record<string, number | string>;

const [role, json] = process.argv.slice(2);
const args = JSON.parse(json ?? "{}") as Args;
const print = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

/** Prints `report()` on SIGTERM or after `bound` seconds, then exits. */
function finishOn(report: () => object, bound: number): void {
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    print(report());
    process.exit(0);
  };
  process.once("SIGTERM", finish);
  setTimeout(finish, bound * 1000).unref();
}

/** Whether the TCP header of the SYN at buf[start, start + len) has option 253 "FTKY". */
function keyed(buf: Uint8Array, start: number, len: number): boolean {
  const ihl = buf[start] >> 4 === 4 ? (buf[start] & 15) * 4 : 40;
  const t = start + ihl;
  if (len < ihl + 20) return false;
  const end = Math.min(start + len, t + (buf[t + 12] >> 4) * 4);
  for (let o = t + 20; o + 1 < end; ) {
    const kind = buf[o];
    if (kind === 0) break;
    if (kind === 1) {
      o++;
      continue;
    }
    const l = buf[o + 1];
    if (l < 2 || o + l > end) break;
    if (kind === 253 && l === 6 && buf[o + 2] === 0x46 && buf[o + 3] === 0x54) {
      return buf[o + 4] === 0x4b && buf[o + 5] === 0x59;
    }
    o += l;
  }
  return false;
}

function verdict(): void {
  const mark = Number(args.mark);
  // drop: answer keyed SYNs with a drop verdict, to tell the kernel's work after an accept
  // (conntrack, NAT, routing) from the queue path itself.
  const drop = args.action === "drop";
  const q = NfQueue.open({
    queue: Number(args.queue),
    batchSize: Number(args.batchSize),
    maxLength: Number(args.maxLength),
    recvBufferBytes: Number(args.recvBufferBytes),
  });
  let first = 0;
  let last = 0;
  let cpuFirst = process.cpuUsage();
  let packets = 0;
  let marked = 0;
  const begin = () =>
    q.onPackets((b) => {
      const t = performance.now();
      if (first === 0) {
        first = t;
        cpuFirst = process.cpuUsage();
      }
      for (let i = 0; i < b.count; i++) {
        if (keyed(b.buffer, b.start(i), b.length(i))) {
          if (drop) b.drop(i);
          else b.accept(i, mark);
          marked++;
        }
      }
      packets += b.count;
      last = t;
    });
  const report = () => {
    const seconds = (last - first) / 1000;
    // The process idles once the flood stops, so its CPU time since the first batch is the
    // time the verdict path took (system time includes the kernel's work after each verdict).
    const cpu = process.cpuUsage(cpuFirst);
    const s = q.stats();
    q.close();
    return {
      packets,
      marked,
      seconds,
      pps: seconds > 0 ? packets / seconds : 0,
      cpuUserSeconds: cpu.user / 1e6,
      cpuSystemSeconds: cpu.system / 1e6,
      stats: s,
    };
  };
  finishOn(report, Number(args.bound));
  if (args.drain) {
    // Drain mode: packets pile up in the kernel until SIGUSR1, then are answered as fast as
    // this process goes; it reports once nothing arrived for 300 ms. Until then nothing
    // polls, so a timer keeps the process alive.
    const keepAlive = setInterval(() => {}, 1000);
    process.once("SIGUSR1", () => {
      clearInterval(keepAlive);
      begin();
      const idle = setInterval(() => {
        if (first > 0 && performance.now() - last > 300) {
          clearInterval(idle);
          print(report());
          process.exit(0);
        }
      }, 50);
    });
  } else {
    begin();
  }
  print({ ready: true });
}

function listener(): void {
  let accepted = 0;
  const srv = net.createServer((c) => {
    accepted++;
    c.on("error", () => {});
    c.end("real service\n");
  });
  srv.listen({ host: String(args.host), port: Number(args.port), backlog: 4096 }, () =>
    print({ ready: true }),
  );
  finishOn(() => ({ accepted }), Number(args.bound));
}

function prober(): void {
  const latencies: number[] = [];
  let failed = 0;
  let attempts = 0;
  const deadline = Date.now() + Number(args.seconds) * 1000;
  const once = (): Promise<void> =>
    new Promise((resolve) => {
      attempts++;
      const t0 = performance.now();
      const s = net.connect({ host: String(args.host), port: Number(args.port) });
      const timer = setTimeout(() => {
        failed++;
        s.destroy();
        resolve();
      }, Number(args.timeoutMs));
      s.once("data", () => {
        clearTimeout(timer);
        latencies.push(performance.now() - t0);
        s.destroy();
        resolve();
      });
      s.once("error", () => {
        clearTimeout(timer);
        failed++;
        resolve();
      });
    });
  const loop = async () => {
    const pending: Promise<void>[] = [];
    while (Date.now() < deadline) {
      pending.push(once());
      await new Promise((r) => setTimeout(r, Number(args.intervalMs)));
    }
    await Promise.all(pending);
    latencies.sort((a, b) => a - b);
    const pct = (p: number) =>
      latencies.length === 0
        ? null
        : latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
    print({
      attempts,
      ok: latencies.length,
      failed,
      p50Ms: pct(0.5),
      p99Ms: pct(0.99),
      maxMs: latencies.length > 0 ? latencies[latencies.length - 1] : null,
    });
    process.exit(0);
  };
  print({ ready: true });
  void loop();
}

if (role === "verdict") verdict();
else if (role === "listener") listener();
else if (role === "prober") prober();
else {
  console.error(`unknown role ${role}`);
  process.exit(2);
}
