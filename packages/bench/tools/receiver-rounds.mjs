// Why does a default-sized receiver fall behind when the tunnel delivers to it? Fixed
// offered rates, both directions, iperf3 with the kernel's default socket buffers at both
// ends, in alternating rounds of several variants on one pair of rigs (one direct, one
// tunnel; the tunnel programs are restarted per variant). Per step: loss, the receiving
// namespace's RcvbufErrors, and how long each party waited for a core (run_delay from
// /proc/PID/task/*/schedstat: the receiving iperf3, the sending iperf3, the client and the
// server program) and how often it was switched in, with the load
// average. Run as root after `pnpm run build`:
//   VARIANTS="direct,noyield:,yield:--udp-yield" RATES=300,400 ROUNDS=4 SECONDS=4 \
//     [BUFFER=4194304] [LATENCY=1] node packages/bench/tools/receiver-rounds.mjs > out.jsonl
// A variant is `direct` or `name:program args:ENV=value ...` (the programs' arguments and
// environment, then the client's own arguments), e.g. `run1:--udp-run 1` or
// `flows1:::--flows 1`; the shorthand `runN` is `--udp-run N`. Two settings act on the
// started programs instead of reaching them: CHRT (chrt's arguments before the pid, "_" for
// spaces, e.g. `idle::CHRT=-a_-i_-p_0` for SCHED_IDLE on every thread) and RENICE (a nice
// value for every thread). One JSON line per step on stdout (with `socketBuffer`); a summary
// (medians per variant, direction and rate) on stderr at the end.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { loadavg } from "node:os";
import { Rig } from "../../e2e/dist/index.js";
import { measureLatency, startProbeEcho } from "../dist/latency.js";

const variants = (process.env.VARIANTS ?? "direct,run8,run1").split(",").map(parseVariant);
const rates = (process.env.RATES ?? "200,300,400").split(",").map(Number);
const rounds = Number(process.env.ROUNDS ?? 3);
const seconds = Number(process.env.SECONDS ?? 4);
// iperf3's socket buffers (-w) in bytes; 0 (the default here): the kernel's defaults.
const socketBuffer = Number(process.env.BUFFER ?? 0);
// LATENCY=1: per variant and round, echo RTT probes (500, 5 ms apart) during a 100 Mbit/s
// A→B iperf3 load with 4 MiB buffers (the bench's "loaded" echo figure), and nothing else.
const latencyOnly = process.env.LATENCY === "1";
const log = (line) => process.stderr.write(`${line}\n`);

function parseVariant(text) {
  if (text === "direct") return { name: "direct", args: [], env: {}, clientArgs: [] };
  const run = /^run(\d+)$/.exec(text);
  if (run) return { name: text, args: ["--udp-run", run[1]], env: {}, clientArgs: [] };
  const [name, args = "", envText = "", clientText = ""] = text.split(":");
  const env = Object.fromEntries(
    envText
      .split(/\s+/)
      .filter(Boolean)
      .map((kv) => kv.split("=")),
  );
  const split = (t) => t.split(/\s+/).filter(Boolean);
  return { name, args: split(args), env, clientArgs: split(clientText) };
}

/** Sum of run_delay (ns) and CPU time (ns) over a process's threads; zeros when it is gone. */
function schedOf(pid) {
  let cpu = 0;
  let wait = 0;
  let runs = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const [c, w, n] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ");
      cpu += Number(c);
      wait += Number(w);
      runs += Number(n);
    }
  } catch {}
  return { cpu, wait, runs };
}

/** iperf3 processes in a namespace (by its inode). */
function iperfPids(ns) {
  const ino = statSync(`/run/netns/${ns.name}`).ino;
  const out = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() !== "iperf3") continue;
      if (readlinkSync(`/proc/${entry}/ns/net`) === `net:[${ino}]`) out.push(Number(entry));
    } catch {}
  }
  return out;
}

/**
 * Samples run_delay/CPU of the iperf3 processes on A and B every 100 ms while `run` goes,
 * keeping first and last sample per pid (the client iperf3 lives only for the step).
 */
async function withIperfSched(rig, run) {
  const seen = new Map();
  const sample = () => {
    for (const [role, ns] of [
      ["A", rig.a],
      ["B", rig.b],
    ]) {
      for (const pid of iperfPids(ns)) {
        const s = schedOf(pid);
        if (s.cpu === 0 && s.wait === 0) continue;
        const e = seen.get(pid) ?? { role, first: s, last: s };
        e.last = s;
        seen.set(pid, e);
      }
    }
  };
  sample();
  const timer = setInterval(sample, 100);
  try {
    const result = await run();
    return { result, seen };
  } finally {
    clearInterval(timer);
    sample();
  }
}

function rcvbuf(rig, role) {
  return rig.udpCounters()[role]?.RcvbufErrors ?? 0;
}

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const direct = variants.some((v) => v.name === "direct")
  ? await Rig.create({ mode: "direct" })
  : null;
const tunnel = await Rig.create({ mode: "tunnel", startTunnel: false });
const steps = [];
try {
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so that no variant always goes first.
    const order = variants.map((_, i) => variants[(i + round) % variants.length]);
    for (const v of order) {
      const rig = v.name === "direct" ? direct : tunnel;
      if (rig === tunnel) {
        await tunnel.client?.stop(3_000);
        await tunnel.server?.stop(3_000);
        const saved = { ...process.env };
        Object.assign(process.env, v.env);
        try {
          await tunnel.startServer(v.args);
          await tunnel.startClient([...v.args, ...v.clientArgs]);
          // Lower priorities for both programs (see the header): what if every other thread
          // came first?
          for (const pid of [tunnel.client?.pid, tunnel.server?.pid]) {
            if (v.env.CHRT) execFileSync("chrt", [...v.env.CHRT.split("_"), String(pid)]);
            if (!v.env.RENICE) continue;
            for (const tid of readdirSync(`/proc/${pid}/task`)) {
              execFileSync("renice", ["-n", v.env.RENICE, "-p", tid], { stdio: "ignore" });
            }
          }
        } finally {
          for (const k of Object.keys(v.env)) {
            if (saved[k] === undefined) delete process.env[k];
            else process.env[k] = saved[k];
          }
        }
        await rig.iperf({ bitrate: 10e6, seconds: 1, length: 1400 }).catch(() => {});
      }
      if (latencyOnly) {
        rig.probeEcho ??= await startProbeEcho(rig);
        const load = rig.iperf({ bitrate: 100e6, seconds: 5, length: 1400 });
        await new Promise((resolve) => setTimeout(resolve, 500));
        const lat = await measureLatency(rig, 500, 5);
        const r = await load;
        const step = {
          variant: v.name,
          round,
          latency: lat,
          loadLoss: r.lostPercent,
          load: loadavg()[0],
        };
        steps.push(step);
        console.log(JSON.stringify(step));
        log(
          `r${round + 1} ${v.name.padEnd(8)} echo p50 ${lat.p50Us} p99 ${lat.p99Us} µs ` +
            `(${lat.received}/${lat.sent}) under 100 Mbit/s, load ${step.load.toFixed(2)}`,
        );
        continue;
      }
      for (const rate of rates) {
        for (const reverse of [false, true]) {
          const receiverRole = reverse ? "A" : "B";
          const programs = [rig.client?.pid, rig.server?.pid].filter((p) => p !== undefined);
          const progBefore = programs.map(schedOf);
          const before = rcvbuf(rig, receiverRole);
          const tunBefore = rig === tunnel ? rcvbuf(rig, "C") + rcvbuf(rig, "S") : 0;
          const load = loadavg()[0];
          let r;
          let seen;
          try {
            ({ result: r, seen } = await withIperfSched(rig, () =>
              rig.iperf({
                bitrate: rate * 1e6,
                seconds,
                length: 1400,
                reverse,
                socketBuffer,
              }),
            ));
          } catch (err) {
            log(`round ${round + 1} ${v.name} ${rate} ${reverse ? "B→A" : "A→B"}: ${err}`);
            continue;
          }
          const progAfter = programs.map(schedOf);
          // The receiving iperf3 is the one in the receiver's namespace.
          const party = (role) => {
            let cpu = 0;
            let wait = 0;
            let runs = 0;
            for (const e of seen.values()) {
              if (e.role !== role) continue;
              cpu += e.last.cpu - e.first.cpu;
              wait += e.last.wait - e.first.wait;
              runs += e.last.runs - e.first.runs;
            }
            return { cpuMs: cpu / 1e6, waitMs: wait / 1e6, runs };
          };
          const step = {
            variant: v.name,
            round,
            socketBuffer,
            dir: reverse ? "B→A" : "A→B",
            rate,
            sent: r.sentBitsPerSecond / 1e6,
            delivered: r.receivedBitsPerSecond / 1e6,
            loss: r.lostPercent,
            rcvbufErrors: rcvbuf(rig, receiverRole) - before,
            tunnelRcvbufErrors:
              rig === tunnel ? rcvbuf(rig, "C") + rcvbuf(rig, "S") - tunBefore : null,
            receiver: party(receiverRole),
            sender: party(reverse ? "B" : "A"),
            programs: programs.map((_, i) => ({
              cpuMs: (progAfter[i].cpu - progBefore[i].cpu) / 1e6,
              waitMs: (progAfter[i].wait - progBefore[i].wait) / 1e6,
              runs: progAfter[i].runs - progBefore[i].runs,
            })),
            load,
          };
          steps.push(step);
          console.log(JSON.stringify(step));
          log(
            `r${round + 1} ${v.name.padEnd(8)} ${step.dir} ${rate}: sent ${step.sent.toFixed(0)} ` +
              `loss ${step.loss.toFixed(2)} % rcvbufErr ${step.rcvbufErrors} ` +
              `recv cpu/wait/runs ${step.receiver.cpuMs.toFixed(0)}/${step.receiver.waitMs.toFixed(0)} ms/${step.receiver.runs} ` +
              `prog cpu/wait ${step.programs.map((p) => `${p.cpuMs.toFixed(0)}/${p.waitMs.toFixed(0)}`).join(" ")} ` +
              `load ${load.toFixed(2)}`,
          );
        }
      }
    }
  }
} finally {
  await tunnel.destroy();
  await direct?.destroy();
}

if (latencyOnly) {
  for (const v of variants) {
    const s = steps.filter((x) => x.variant === v.name);
    log(
      `${v.name.padEnd(8)} echo p50 median ${median(s.map((x) => x.latency.p50Us))} µs, ` +
        `p99 median ${median(s.map((x) => x.latency.p99Us))} µs (p99s ${s.map((x) => x.latency.p99Us).join(", ")})`,
    );
  }
  process.exit(0);
}
log("\nmedians: variant dir rate: loss % | RcvbufErrors | receiver wait ms | samples");
for (const v of variants) {
  for (const dir of ["A→B", "B→A"]) {
    for (const rate of rates) {
      const s = steps.filter((x) => x.variant === v.name && x.dir === dir && x.rate === rate);
      log(
        `${v.name.padEnd(8)} ${dir} ${rate}: ${median(s.map((x) => x.loss))?.toFixed(2)} | ` +
          `${median(s.map((x) => x.rcvbufErrors))} | ${median(s.map((x) => x.receiver.waitMs))?.toFixed(1)} | ` +
          `${s.length} (losses ${s.map((x) => x.loss.toFixed(1)).join(", ")})`,
      );
    }
  }
}
