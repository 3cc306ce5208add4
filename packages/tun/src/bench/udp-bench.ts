/**
 * UDP socket section of `pnpm bench:tun` (also runnable alone: `node
 * packages/tun/dist/bench/udp-bench.js`, as root): UdpBatchSocket against Node's dgram for
 * 1400-byte datagrams on the loopback of a throw-away namespace. Receive: fed by the C
 * sendmmsg flood; send: counted by the C recvmmsg sink.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compileFlood } from "./flood.js";
import { SEGMENTED_RUN as RUN } from "./scenario.js";
import type { UdpScenario } from "./udp-child.js";

const CHILD = fileURLToPath(new URL("./udp-child.js", import.meta.url));
const k = (pps: number) => `${(pps / 1000).toFixed(0)} kpps`;

function run(ns: string, s: UdpScenario): Record<string, number> {
  const out = execFileSync(
    "ip",
    ["netns", "exec", ns, process.execPath, CHILD, JSON.stringify(s)],
    { encoding: "utf8", timeout: (s.seconds + 20) * 1000, stdio: ["ignore", "pipe", "inherit"] },
  );
  return JSON.parse(out.trim().split("\n").pop() ?? "{}") as Record<string, number>;
}

/** Runs the UDP measurements in namespace `ns` (loopback up) and reports each row. */
export function runUdpSection(
  ns: string,
  flood: string,
  seconds: number,
  report: (label: string, value: string) => void,
): void {
  let port = 9100;
  for (const api of ["batch", "dgram"] as const) {
    const r = run(ns, { kind: "recv", api, flood, seconds, port: port++ });
    const who = api === "batch" ? "UdpBatchSocket (recvmmsg, batch 64)" : "node:dgram ('message')";
    const extra = api === "batch" ? `avg batch ${r.avgBatch.toFixed(1)}, ` : "";
    report(`UDP receive, ${who}`, `${k(r.pps)} (${extra}source ${k(r.sourcePps)})`);
  }
  for (const api of ["batch-single", "batch-mmsg", "batch-segmented", "dgram"] as const) {
    const r = run(ns, { kind: "send", api, flood, seconds, port: port++ });
    const who =
      api === "batch-single"
        ? "UdpBatchSocket.send (sendto)"
        : api === "batch-mmsg"
          ? "UdpBatchSocket.sendBatch (sendmmsg, 64)"
          : api === "batch-segmented"
            ? `UdpBatchSocket.sendSegmented (UDP_SEGMENT, ${RUN})`
            : "node:dgram send (callback, <= 1024 in flight)";
    report(
      `UDP send, ${who}`,
      `${k(r.pps)} (sink received ${(r.delivered * 100).toFixed(0)}%, drops ${k(r.dropPps)})`,
    );
  }
}

function main(): void {
  if (process.getuid?.() !== 0) {
    console.error("the UDP benchmark needs root to create a network namespace");
    process.exit(1);
  }
  const seconds = Number(process.env.TUN_BENCH_SECONDS ?? 3);
  const ns = `ftudpb${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), "ftudpb-"));
  const cleanup = () => {
    try {
      execFileSync("ip", ["netns", "del", ns], { stdio: "pipe" });
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => {
    cleanup();
    process.exit(130);
  });
  try {
    const flood = compileFlood(dir);
    execFileSync("ip", ["netns", "add", ns], { stdio: "pipe" });
    execFileSync("ip", ["-n", ns, "link", "set", "lo", "up"], { stdio: "pipe" });
    const load = execFileSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).trim();
    console.log(
      `UDP socket benchmark: 1400-byte datagrams on a namespace's loopback, ${seconds} s windows, ${cpus().length} CPUs, Node ${process.version}, loadavg ${load}`,
    );
    const rows: [string, string][] = [];
    runUdpSection(ns, flood, seconds, (label, value) => {
      rows.push([label, value]);
      console.log(`  ${label.padEnd(58)} ${value}`);
    });
    console.log("\nMarkdown:\n\n| Measurement | Result |\n|---|---|");
    for (const [label, value] of rows) console.log(`| ${label} | ${value} |`);
  } finally {
    cleanup();
  }
}

// Run alone when executed directly; tun-bench.ts imports runUdpSection.
if (process.argv[1] === fileURLToPath(import.meta.url)) main();
