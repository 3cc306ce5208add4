// Where the tunnel programs' CPU goes: a tunnel rig, a JIT warm-up, then fixed-rate iperf3
// steps (1400-byte UDP) with `perf record -g` (TOOL=perf) or per-syscall counts
// (TOOL=syscalls, `perf stat` on syscall tracepoints) attached to both programs.
// Run as root after `pnpm run build`:
//   NODE_OPTIONS=--perf-basic-prof TOOL=perf RATES=100,400 node packages/bench/tools/cpu-profile.mjs
//   TOOL=syscalls RATES=100,300 node packages/bench/tools/cpu-profile.mjs
//   perf script -i OUT/perf-100-A→B.data | python3 packages/bench/tools/cpu-breakdown.py
// (NODE_OPTIONS reaches the programs: the rig passes its environment on; --perf-basic-prof
// names their JIT frames in /tmp/perf-PID.map.) Env: RATES (Mbit/s), SECS (per step, default
// 5), WARM (Mbit/s of the warm-up, default 300), OUT (default /tmp).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { Rig } from "../../e2e/dist/index.js";

const rates = (process.env.RATES ?? "100").split(",").map(Number);
const seconds = Number(process.env.SECS ?? 5);
const warm = Number(process.env.WARM ?? 300);
const tool = process.env.TOOL ?? "none";
const out = process.env.OUT ?? "/tmp";
const SYSCALLS = [
  "epoll_pwait",
  "recvmmsg",
  "read",
  "write",
  "writev",
  "sendmsg",
  "sendmmsg",
  "futex",
];

function cpuSeconds(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** The profiler for one step (it stops a second before the step ends), or null. */
function attach(pids, tag) {
  const during = ["--", "sleep", String(seconds - 1)];
  if (tool === "perf")
    return spawn(
      "perf",
      [
        "record",
        "-F",
        "999",
        "-g",
        "-o",
        `${out}/perf-${tag}.data`,
        "-p",
        pids.join(","),
        ...during,
      ],
      { stdio: "ignore" },
    );
  if (tool === "syscalls") {
    const events = SYSCALLS.map((s) => `syscalls:sys_enter_${s}`).join(",");
    return spawn(
      "perf",
      [
        "stat",
        "-x,",
        "-o",
        `${out}/syscalls-${tag}.txt`,
        "-e",
        events,
        "-p",
        pids.join(","),
        ...during,
      ],
      { stdio: "ignore" },
    );
  }
  return null;
}

const rig = await Rig.create({ mode: "tunnel" });
try {
  await rig.iperf({ bitrate: 10e6, seconds: 1, length: 1400 }).catch(() => {});
  for (const reverse of [false, true])
    await rig.iperf({ bitrate: warm * 1e6, seconds: 4, length: 1400, reverse }).catch(() => {});
  const pids = [rig.client.pid, rig.server.pid];
  for (const rate of rates) {
    for (const reverse of [false, true]) {
      const tag = `${rate}-${reverse ? "B→A" : "A→B"}`;
      const profiler = attach(pids, tag);
      const profiled = profiler ? new Promise((resolve) => profiler.on("exit", resolve)) : null;
      const before = pids.map(cpuSeconds);
      const r = await rig.iperf({ bitrate: rate * 1e6, seconds, length: 1400, reverse });
      const cpu = pids.map((p, i) => cpuSeconds(p) - before[i]);
      await profiled;
      const datagrams = (r.receivedBitsPerSecond * r.seconds) / 8 / 1400;
      const line = {
        step: tag,
        deliveredMbps: +(r.receivedBitsPerSecond / 1e6).toFixed(1),
        lossPercent: +r.lostPercent.toFixed(3),
        clientCpu: +cpu[0].toFixed(2),
        serverCpu: +cpu[1].toFixed(2),
        cpuPerGbit: +((cpu[0] + cpu[1]) / ((datagrams * 1400 * 8) / 1e9)).toFixed(3),
      };
      if (tool === "syscalls") {
        // Counted over seconds - 1 of the step's seconds.
        const share = (seconds - 1) / seconds;
        for (const row of readFileSync(`${out}/syscalls-${tag}.txt`, "utf8").split("\n")) {
          const [count, , event] = row.split(",");
          if (event?.startsWith("syscalls:"))
            line[`${event.replace("syscalls:sys_enter_", "")}PerDatagram`] = +(
              Number(count) /
              (datagrams * share)
            ).toFixed(3);
        }
      }
      console.log(JSON.stringify(line));
    }
  }
} finally {
  await rig.destroy();
}
