/**
 * `pnpm bench:tun`: packets per second through a real TUN device (1400-byte IPv4/UDP), in a
 * throw-away network namespace, about a minute in total.
 *
 * Read: a C sendmmsg flood to the peer address feeds the TUN; measured with one packet per
 * wake-up (batchSize 1) and batched (64), on one queue, and on two queues read by two
 * worker_threads. The source alone (nobody reading) is measured too, so the figures can be
 * judged against what the source can offer. Write: single write, gather write and batch write
 * into the kernel, whose UDP socket (a C recvmmsg sink) counts what was delivered; and TCP
 * segments one per writeGather against writeSegmented runs (GSO), forwarded to a second TUN.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compileFlood } from "./flood.js";
import { type Scenario, SEGMENTS_PER_CALL } from "./scenario.js";
import { runUdpSection } from "./udp-bench.js";

const CHILD = fileURLToPath(new URL("./child.js", import.meta.url));
const SECONDS = Number(process.env.TUN_BENCH_SECONDS ?? 3);
/** Packets per queue ring in the drain runs (~0.5 GB of kernel memory per queue at most). */
const DRAIN_FILL = 200_000;

function ip(args: string[]): void {
  execFileSync("ip", args, { stdio: "pipe" });
}

function runScenario(ns: string, scenario: Scenario): Record<string, number> {
  const out = execFileSync(
    "ip",
    ["netns", "exec", ns, process.execPath, CHILD, JSON.stringify(scenario)],
    { encoding: "utf8", timeout: (SECONDS + 20) * 1000, stdio: ["ignore", "pipe", "inherit"] },
  );
  const line = out.trim().split("\n").pop() ?? "{}";
  return JSON.parse(line) as Record<string, number>;
}

const k = (pps: number) => `${(pps / 1000).toFixed(0)} kpps`;

function main(): void {
  if (process.getuid?.() !== 0) {
    console.error("bench:tun needs root (CAP_NET_ADMIN) to create a namespace and a TUN device");
    process.exit(1);
  }
  const ns = `ftbench${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), "ftbench-"));
  const cleanup = () => {
    try {
      ip(["netns", "del", ns]);
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => {
    cleanup();
    process.exit(130);
  });
  try {
    const flood = compileFlood(dir);
    ip(["netns", "add", ns]);
    ip(["-n", ns, "link", "set", "lo", "up"]);
    const load = execFileSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).trim();
    console.log(
      `TUN benchmark: 1400-byte IPv4/UDP packets, ${SECONDS} s windows, ${cpus().length} CPUs, Node ${process.version}, loadavg ${load}`,
    );
    const rows: [string, string][] = [];
    const report = (label: string, value: string) => {
      rows.push([label, value]);
      console.log(`  ${label.padEnd(58)} ${value}`);
    };

    const src1 = runScenario(ns, { kind: "source", flood, flows: 1, threads: 1, seconds: SECONDS });
    report("source alone (sendmmsg, 1 thread, nobody reading)", k(src1.sourcePps));
    for (const batchSize of [1, 64]) {
      const r = runScenario(ns, {
        kind: "read",
        flood,
        workers: 0,
        batchSize,
        flows: 1,
        threads: 1,
        seconds: SECONDS,
      });
      report(
        `read, 1 queue, batchSize ${batchSize} (main thread)`,
        `${k(r.readPps)} (avg batch ${r.avgBatch.toFixed(1)}, source ${k(r.sourcePps)})`,
      );
    }
    const src2 = runScenario(ns, { kind: "source", flood, flows: 8, threads: 2, seconds: SECONDS });
    report("source alone (sendmmsg, 2 threads, 8 flows, nobody reading)", k(src2.sourcePps));
    const w2 = runScenario(ns, {
      kind: "read",
      flood,
      workers: 2,
      batchSize: 64,
      flows: 8,
      threads: 2,
      seconds: SECONDS,
    });
    report(
      "read, 2 queues on 2 worker_threads, batchSize 64",
      `${k(w2.readPps)} (avg batch ${w2.avgBatch.toFixed(1)}, source ${k(w2.sourcePps)})`,
    );
    for (const [workers, batchSize] of [
      [0, 1],
      [0, 64],
      [2, 64],
    ] as const) {
      const r = runScenario(ns, { kind: "drain", flood, workers, batchSize, fill: DRAIN_FILL });
      const who =
        workers === 0 ? "1 queue (main thread)" : `${workers} queues on ${workers} workers`;
      report(
        `drain pre-filled rings, ${who}, batchSize ${batchSize}`,
        `${k(r.drainPps)} (${r.drained} packets, avg batch ${r.avgBatch.toFixed(1)})`,
      );
    }
    for (const mode of ["single", "gather", "batch"] as const) {
      const r = runScenario(ns, { kind: "write", flood, mode, seconds: SECONDS });
      report(
        `write, 1 queue, ${mode}`,
        `${k(r.writePps)} (delivered to socket ${k(r.deliveredPps)}, drops ${k(r.dropPps)})`,
      );
    }
    for (const mode of ["gather", "segmented"] as const) {
      const r = runScenario(ns, { kind: "tcpwrite", mode, seconds: SECONDS });
      const how =
        mode === "gather"
          ? "writeGather per segment"
          : `writeSegmented, ${SEGMENTS_PER_CALL} per call (GSO)`;
      report(
        `write TCP 1400 B segments, ${how}`,
        `${k(r.segmentsPps)} (${(r.callsPs / 1000).toFixed(1)}k calls/s, reached the forward sink ${k(r.egressPps)}, drops ${k(r.dropPps)})`,
      );
    }
    runUdpSection(ns, flood, SECONDS, report);
    console.log("\nMarkdown:\n\n| Measurement | Result |\n|---|---|");
    for (const [label, value] of rows) console.log(`| ${label} | ${value} |`);
  } finally {
    cleanup();
  }
}

main();
