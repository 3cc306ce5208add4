/**
 * `pnpm bench:nfqueue`: how many new SYNs per second the NfQueue verdict path takes on one
 * core, and whether the port's real service keeps accepting connections meanwhile. As root,
 * in two throw-away namespaces, about 30 s in all.
 *
 * Server namespace: a TUN device whose far end is "the internet" (a C program writes SYNs
 * into it from ever new spoofed sources, pinned to CPU 0), the real service (node:net on port
 * 4443), and the rules of port sharing: new SYNs to 4443 go to queue 7 (bypass), the queue
 * program (pinned to CPU 1) accepts SYNs that carry the marker option with mark 0x77, the
 * mark is copied to the conntrack entry, and marked connections are DNATed to an address
 * routed to a blackhole (a stand-in for the tunnel's TUN; the tunnel's own cost is not
 * measured here). Client namespace, linked by veth: a prober opens a real connection to the
 * service every 20 ms during each flood (its SYNs take the queue path too, unmarked).
 *
 * The queue program's rate is packets / (last batch - first batch). SYNs the source wrote
 * beyond what the program took were let through unqueued by the kernel (fail-open) to the
 * real service, which answers them with SYN cookies.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const CHILD = fileURLToPath(new URL("./nfqueue-child.js", import.meta.url));
const FLOOD_SOURCE = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "native",
  "syn-flood.c",
);
const SECONDS = Number(process.env.NFQ_BENCH_SECONDS ?? 3);
const QUEUE = 7;
const MARK = 0x77;
const PORT = 4443;
/** SYNs held for a drain run: well under the ~65k this kernel would hold for one socket. */
const DRAIN = 50_000;

type Json = Record<string, number | boolean | null | Record<string, number>>;

function sh(args: string[], input?: string): string {
  return execFileSync(args[0], args.slice(1), {
    encoding: "utf8",
    stdio: ["pipe", "pipe", "pipe"],
    input,
  });
}

/** Runs `node nfqueue-child.js ROLE` in `ns` (pinned to `cpu`): ready, then its result. */
function startChild(
  ns: string,
  role: string,
  args: object,
  cpu?: number,
): { child: ChildProcess; ready: Promise<void>; result: Promise<Json> } {
  const pin = cpu === undefined ? [] : ["taskset", "-c", String(cpu)];
  const child = spawn(
    "ip",
    ["netns", "exec", ns, ...pin, process.execPath, CHILD, role, JSON.stringify(args)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  live.add(child);
  let out = "";
  let readyResolve: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    readyResolve = resolve;
  });
  child.stdout?.setEncoding("utf8").on("data", (d: string) => {
    out += d;
    if (out.includes('"ready":true')) readyResolve();
  });
  const result = new Promise<Json>((resolve, reject) => {
    child.once("exit", (code) => {
      live.delete(child);
      const line = out.trim().split("\n").pop() ?? "";
      try {
        resolve(JSON.parse(line) as Json);
      } catch {
        reject(new Error(`${role} exited ${code} without a result`));
      }
    });
  });
  return { child, ready, result };
}

const live = new Set<ChildProcess>();

/** Queues new SYNs to PORT: nft's queue statement, or the xtables target without nft_queue. */
function queueRule(ns: string): string {
  try {
    sh(
      ["ip", "netns", "exec", ns, "nft", "-f", "-"],
      `table inet nfqbench_queue { chain syn { type filter hook prerouting priority mangle; policy accept;
  tcp dport ${PORT} tcp flags & (fin | syn | rst | ack) == syn ct state new queue num ${QUEUE} bypass
} }`,
    );
    return "nft queue";
  } catch {
    for (const tool of ["iptables-nft", "ip6tables-nft"])
      sh([
        ...["ip", "netns", "exec", ns, tool, "-t", "mangle", "-A", "PREROUTING", "-p", "tcp"],
        ...["--dport", String(PORT), "--syn", "-m", "conntrack", "--ctstate", "NEW"],
        ...["-j", "NFQUEUE", "--queue-num", String(QUEUE), "--queue-bypass"],
      ]);
    return "iptables-nft NFQUEUE (no nft_queue in this kernel)";
  }
}

function setup(server: string, client: string): string {
  const inS = (...a: string[]) => sh(["ip", "netns", "exec", server, ...a]);
  for (const ns of [server, client]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  inS("ip", "tuntap", "add", "dev", "wan0", "mode", "tun");
  inS("ip", "addr", "add", "10.99.0.1/32", "dev", "wan0");
  inS("ip", "-6", "addr", "add", "fd00:99::1/128", "dev", "wan0", "nodad");
  inS("ip", "link", "set", "wan0", "up");
  inS("ip", "route", "add", "10.100.0.0/16", "dev", "wan0");
  inS("ip", "-6", "route", "add", "fd00:100::/64", "dev", "wan0");
  inS("ip", "route", "add", "blackhole", "10.98.0.0/24");
  inS("ip", "-6", "route", "add", "blackhole", "fd00:98::/64");
  sh([
    "ip",
    "-n",
    server,
    "link",
    "add",
    "vs0",
    "type",
    "veth",
    "peer",
    "name",
    "vc0",
    "netns",
    client,
  ]);
  inS("ip", "addr", "add", "10.97.0.1/24", "dev", "vs0");
  inS("ip", "link", "set", "vs0", "up");
  sh(["ip", "-n", client, "addr", "add", "10.97.0.2/24", "dev", "vc0"]);
  sh(["ip", "-n", client, "link", "set", "vc0", "up"]);
  sh(
    ["ip", "netns", "exec", server, "nft", "-f", "-"],
    `table inet nfqbench {
  chain copy_mark { type filter hook prerouting priority mangle + 10; policy accept;
    meta mark ${MARK} ct mark set meta mark
  }
  chain keyed_dnat { type nat hook prerouting priority dstnat; policy accept;
    ct mark ${MARK} meta nfproto ipv4 tcp dport ${PORT} dnat ip to 10.98.0.2:4444
    ct mark ${MARK} meta nfproto ipv6 tcp dport ${PORT} dnat ip6 to [fd00:98::2]:4444
  }
}`,
  );
  return queueRule(server);
}

interface Row {
  family: 4 | 6;
  rate: number; // 0 = as fast as the source goes
  keyedPercent: number;
  batchSize: number;
  /** Drain mode: the source writes this many SYNs while the program does not read, then
   * the program answers them as fast as it goes (its own limit, not the source's). */
  drain?: number;
  /** "drop": keyed SYNs get a drop verdict (the queue path without the kernel's work after
   * an accept: mark copy, DNAT, routing). Default: accept with the mark. */
  action?: "drop";
}

/** Packets held by queue QUEUE in `ns` (the kernel's own count). */
function held(ns: string): number {
  const text = sh(["ip", "netns", "exec", ns, "cat", "/proc/net/netfilter/nfnetlink_queue"]);
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (Number(f[0]) === QUEUE) return Number(f[2]);
  }
  return 0;
}

async function runRow(server: string, client: string, flood: string, row: Row) {
  try {
    sh(["ip", "netns", "exec", server, "conntrack", "-F"]); // start each row with an empty table
  } catch {}
  const drain = row.drain ?? 0;
  const verdict = startChild(
    server,
    "verdict",
    {
      queue: QUEUE,
      mark: MARK,
      batchSize: row.batchSize,
      maxLength: drain > 0 ? drain + 10_000 : 8192,
      recvBufferBytes: drain > 0 ? 512 << 20 : 4 << 20,
      bound: SECONDS + 60,
      drain: drain > 0,
      action: row.action ?? "mark",
    },
    1,
  );
  await verdict.ready;
  const prober =
    drain > 0
      ? null
      : startChild(client, "prober", {
          host: "10.97.0.1",
          port: PORT,
          seconds: SECONDS,
          intervalMs: 20,
          timeoutMs: 1000,
        });
  await prober?.ready;
  const dst = row.family === 4 ? "10.99.0.1" : "fd00:99::1";
  const out = sh([
    ...["ip", "netns", "exec", server, "taskset", "-c", "0", flood, "wan0", String(row.family)],
    ...[dst, String(PORT), String(drain > 0 ? 60 : SECONDS), String(row.rate)],
    ...[String(row.keyedPercent), ...(drain > 0 ? [String(drain)] : [])],
  ]);
  const source = JSON.parse(out.trim().split("\n").pop() ?? "{}") as Json;
  const heldBefore = drain > 0 ? held(server) : 0;
  const probe = prober === null ? null : await prober.result;
  if (drain > 0) verdict.child.kill("SIGUSR1");
  else {
    await new Promise((r) => setTimeout(r, 300)); // let the last batches drain
    verdict.child.kill("SIGTERM");
  }
  const v = await verdict.result;
  return { source, probe, v, heldBefore };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("bench:nfqueue needs root (CAP_NET_ADMIN) to create namespaces and queues");
    process.exit(1);
  }
  const server = `ftnqs${process.pid}`;
  const client = `ftnqc${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), "ftnqb-"));
  const cleanup = () => {
    for (const c of live) c.kill("SIGKILL");
    for (const ns of [server, client]) {
      try {
        sh(["ip", "netns", "del", ns]);
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("SIGINT", () => {
    cleanup();
    process.exit(130);
  });
  try {
    const flood = join(dir, "syn-flood");
    try {
      sh(["cc", "-O2", "-o", flood, FLOOD_SOURCE]);
    } catch (error) {
      throw new Error(`cannot compile ${FLOOD_SOURCE} (a C compiler is needed): ${String(error)}`);
    }
    const how = setup(server, client);
    const listener = startChild(server, "listener", { host: "::", port: PORT, bound: 600 });
    await listener.ready;
    const load = sh(["cat", "/proc/loadavg"]).trim();
    console.log(
      `NFQUEUE benchmark: new SYNs to port ${PORT} queued with ${how}; queue program on CPU 1, SYN source on CPU 0; ${SECONDS} s floods; ${cpus().length} CPUs, Node ${process.version}, loadavg ${load}`,
    );
    const rows: Row[] = [
      { family: 4, rate: 0, keyedPercent: 100, batchSize: 64 },
      { family: 6, rate: 0, keyedPercent: 100, batchSize: 64 },
      { family: 4, rate: 0, keyedPercent: 50, batchSize: 64 },
      { family: 4, rate: 0, keyedPercent: 100, batchSize: 64, drain: DRAIN },
      { family: 6, rate: 0, keyedPercent: 100, batchSize: 64, drain: DRAIN },
      { family: 4, rate: 0, keyedPercent: 50, batchSize: 64, drain: DRAIN },
      { family: 4, rate: 0, keyedPercent: 100, batchSize: 256, drain: DRAIN },
      { family: 4, rate: 0, keyedPercent: 100, batchSize: 64, drain: DRAIN, action: "drop" },
    ];
    const table: string[][] = [];
    for (const row of rows) {
      const { source, probe, v, heldBefore } = await runRow(server, client, flood, row);
      const sent = Number(source.sent);
      const packets = Number(v.packets);
      const cpuSeconds = Number(v.cpuUserSeconds) + Number(v.cpuSystemSeconds);
      const perSyn = packets > 0 ? (cpuSeconds / packets) * 1e6 : 0;
      const what = row.drain
        ? `drain ${row.drain / 1000}k held SYNs${row.action === "drop" ? ", drop verdicts" : ""}`
        : row.rate === 0
          ? "flood, unpaced"
          : `flood, paced ${row.rate / 1000}k/s`;
      const cells = [
        `IPv${row.family}, ${row.keyedPercent}% keyed, ${what}, batch ${row.batchSize}`,
        `${(Number(v.pps) / 1000).toFixed(0)}k`,
        row.drain
          ? `${heldBefore} held of ${sent}`
          : `${(sent / Number(source.seconds) / 1000).toFixed(0)}k/s, ${Math.max(0, sent - packets)} let through unqueued`,
        `${perSyn.toFixed(1)} µs (user ${((Number(v.cpuUserSeconds) / Math.max(packets, 1)) * 1e6).toFixed(1)})`,
        `${perSyn > 0 ? (1e6 / perSyn / 1000).toFixed(0) : "-"}k`,
        probe === null
          ? "-"
          : `${probe.ok}/${probe.attempts} (p50 ${Number(probe.p50Ms).toFixed(1)} ms, max ${Number(probe.maxMs).toFixed(0)} ms)`,
      ];
      table.push(cells);
      console.log(`  ${cells.join(" | ")}`);
      const stats = v.stats as Record<string, number>;
      if (stats.sendErrors > 0 || stats.kernelErrors > 0)
        console.log(`    verdict errors: ${JSON.stringify(stats)}`);
    }
    console.log(
      "\nMarkdown:\n\n| Run | Verdicts/s (queue program, CPU 1) | Source | Queue program CPU per SYN | One core at that cost | Real service probes OK |\n|---|---|---|---|---|---|",
    );
    for (const cells of table) console.log(`| ${cells.join(" | ")} |`);
    listener.child.kill("SIGTERM");
    const l = await listener.result;
    console.log(
      `\nThe real service accepted ${l.accepted} connections in all (probes and fail-open SYNs).`,
    );
  } finally {
    cleanup();
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
