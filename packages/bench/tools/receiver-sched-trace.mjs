// Scheduler trace of one fixed-rate iperf3 step (default buffers) through the tunnel or
// directly: `perf sched record` on every CPU for 2 s in the middle of the step, so that
// `perf sched latency` / `perf sched timehist` show how long the receiving iperf3 waits for a
// core after each wake-up and what runs meanwhile. Run as root after `pnpm run build`:
//   MODE=tunnel ARGS="--udp-run 8" RATE=300 REVERSE=0 OUT=/tmp/x.data \
//     node packages/bench/tools/receiver-sched-trace.mjs
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { Rig } from "../../e2e/dist/index.js";

const mode = process.env.MODE ?? "tunnel";
const args = (process.env.ARGS ?? "").split(/\s+/).filter(Boolean);
const rate = Number(process.env.RATE ?? 300);
const reverse = process.env.REVERSE === "1";
const out = process.env.OUT ?? "/tmp/receiver-sched.data";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Threads of the processes named `comm` in a namespace (by its inode). */
function threadsIn(ns, comm) {
  const ino = statSync(`/run/netns/${ns.name}`).ino;
  const out = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() !== comm) continue;
      if (readlinkSync(`/proc/${entry}/ns/net`) !== `net:[${ino}]`) continue;
      out.push(...readdirSync(`/proc/${entry}/task`).map(Number));
    } catch {}
  }
  return out;
}

const rig = await Rig.create({ mode, clientArgs: args, serverArgs: args });
try {
  if (mode === "tunnel")
    await rig.iperf({ bitrate: 10e6, seconds: 1, length: 1400 }).catch(() => {});
  const before = rig.udpCounters();
  const step = rig.iperf({
    bitrate: rate * 1e6,
    seconds: 5,
    length: 1400,
    reverse,
    socketBuffer: 0,
  });
  await sleep(1500);
  const receiverNs = reverse ? rig.a : rig.b;
  const senderNs = reverse ? rig.b : rig.a;
  const tids = {
    receiver: threadsIn(receiverNs, "iperf3"),
    sender: threadsIn(senderNs, "iperf3"),
    client: mode === "tunnel" ? threadsIn(rig.c, "node") : [],
    server: mode === "tunnel" ? threadsIn(rig.s, "node") : [],
  };
  const perf = spawn("perf", ["sched", "record", "-a", "-o", out, "--", "sleep", "2"], {
    stdio: "ignore",
  });
  await new Promise((resolve) => perf.on("exit", resolve));
  const r = await step;
  const after = rig.udpCounters();
  const role = reverse ? "A" : "B";
  console.log(
    JSON.stringify({
      mode,
      args,
      rate,
      reverse,
      loss: r.lostPercent,
      rcvbufErrors: after[role].RcvbufErrors - before[role].RcvbufErrors,
      tids,
    }),
  );
} finally {
  await rig.destroy();
}
