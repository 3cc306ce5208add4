// CPU of the tunnel programs per gigabit, two built checkouts side by side: alternating rounds
// (A B B A A B ...: each goes first equally often) on a fresh tunnel rig each round, the same
// fixed-rate iperf3 steps (1400-byte UDP, both directions) in every round, medians at the end.
// One run on a shared machine compares like with like; two separate runs do not.
// Run as root after `pnpm run build` in both checkouts:
//   node packages/bench/tools/cpu-ab.mjs <checkout A> <checkout B> [ROUNDS=4] [RATES=100,300] [SECS=5]
// Prints one JSON line per step, then a Markdown table of medians (CPU s per Gbit, client +
// server; B/A ratio).
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const roots = process.argv.slice(2, 4).map((p) => resolve(p));
if (roots.length !== 2) {
  console.error("usage: node cpu-ab.mjs <checkout A> <checkout B> (both built)");
  process.exit(2);
}
const rounds = Number(process.env.ROUNDS ?? 4);
const rates = (process.env.RATES ?? "100,300").split(",").map(Number);
const seconds = Number(process.env.SECS ?? 5);
const DATAGRAM = 1400;

/** utime + stime of a process (all its threads), in seconds. */
function cpuSeconds(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

const rigs = await Promise.all(roots.map((root) => import(`${root}/packages/e2e/dist/index.js`)));
const steps = [];
for (let pair = 0; pair < rounds; pair++) {
  for (const which of pair % 2 === 0 ? [0, 1] : [1, 0]) {
    const rig = await rigs[which].Rig.create({ mode: "tunnel" });
    try {
      // Sets up the connection, then warms both programs' JIT up at a rate above the steps'.
      await rig.iperf({ bitrate: 10e6, seconds: 1, length: DATAGRAM }).catch(() => {});
      for (const reverse of [false, true])
        await rig.iperf({ bitrate: 300e6, seconds: 3, length: DATAGRAM, reverse }).catch(() => {});
      const pids = [rig.client.pid, rig.server.pid];
      for (const rate of rates) {
        for (const reverse of [false, true]) {
          const before = pids.map(cpuSeconds);
          try {
            const r = await rig.iperf({ bitrate: rate * 1e6, seconds, length: DATAGRAM, reverse });
            const cpu = pids.map((p, i) => cpuSeconds(p) - before[i]);
            const gbit = (r.receivedBitsPerSecond * r.seconds) / 1e9;
            const step = {
              checkout: "AB"[which],
              round: pair,
              rate,
              direction: reverse ? "B→A" : "A→B",
              deliveredMbps: +(r.receivedBitsPerSecond / 1e6).toFixed(1),
              lossPercent: +r.lostPercent.toFixed(3),
              clientCpu: +cpu[0].toFixed(2),
              serverCpu: +cpu[1].toFixed(2),
              cpuPerGbit: gbit > 0 ? +((cpu[0] + cpu[1]) / gbit).toFixed(3) : null,
            };
            steps.push(step);
            console.log(JSON.stringify(step));
          } catch (err) {
            console.log(
              JSON.stringify({ checkout: "AB"[which], round: pair, rate, error: String(err) }),
            );
          }
        }
      }
    } finally {
      await rig.destroy();
    }
  }
}

const median = (xs) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
console.log(`\nA = ${roots[0]}\nB = ${roots[1]}\n`);
console.log(`| CPU s per Gbit (client + server), median of ${rounds} rounds | A | B | B / A |`);
console.log("|---|---|---|---|");
for (const rate of rates) {
  for (const direction of ["A→B", "B→A"]) {
    const of = (c) =>
      median(
        steps
          .filter((s) => s.checkout === c && s.rate === rate && s.direction === direction)
          .map((s) => s.cpuPerGbit)
          .filter((x) => x !== null),
      );
    const a = of("A");
    const b = of("B");
    const ratio = a && b ? (b / a).toFixed(3) : "–";
    console.log(
      `| ${rate} Mbit/s ${direction} | ${a?.toFixed(3) ?? "–"} | ${b?.toFixed(3) ?? "–"} | ${ratio} |`,
    );
  }
}
