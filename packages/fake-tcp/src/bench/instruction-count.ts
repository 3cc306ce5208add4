/**
 * `pnpm bench:instructions`: machine instructions per datagram through the stack's data path
 * (send, device copy, dispatch, receive; IPv4, checksum offload), counted by valgrind's
 * callgrind. Unlike datagrams per second, an instruction count does not depend on what else
 * the machine is doing, so two builds or two modes compare exactly on a shared machine.
 *
 * Each configuration runs twice, with `rounds` and `3 × rounds` measured rounds after the same
 * set-up and warm-up; the difference divided by the extra datagrams removes start-up, set-up
 * and warm-up from the figure. V8 runs single-threaded and "predictable" (no background
 * compilation or GC, a fixed GC schedule), so that when code gets optimised and when the heap
 * is collected do not depend on thread scheduling or the clock.
 *
 * `--baseline DIR` also counts the unkeyed path of another built checkout (e.g. a worktree of
 * an older commit): this script and connected-pair.js are copied into its
 * packages/fake-tcp/dist/bench/ and run against that checkout's stack.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BATCH, connectedPair, sendRound } from "./connected-pair.js";

const PAYLOAD = 1400;
const WARM_UP_ROUNDS = 2000;

/** The measured process: set-up, warm-up, then `rounds` rounds each way. */
async function child(rounds: number, keyed: boolean): Promise<void> {
  // A fixed key: its value changes no branch of the data path, and runs stay identical.
  const key = keyed ? new Uint8Array(32).fill(7) : undefined;
  // No stack timer fires during a run (an hour's period): how often it would is a matter of
  // the wall clock, which valgrind slows down by a varying factor.
  const { qa, qb, a, b, sa, sb } = await connectedPair(true, 4, key, 3_600_000);
  const payload = Buffer.alloc(PAYLOAD, 0x5a);
  let bytes = 0;
  sa.onDatagram((d) => {
    bytes += d.length;
  });
  sb.onDatagram((d) => {
    bytes += d.length;
  });
  const aToB = sendRound(sa, qa, payload);
  const bToA = sendRound(sb, qb, payload);
  for (let i = 0; i < WARM_UP_ROUNDS; i++) {
    aToB();
    bToA();
  }
  for (let i = 0; i < rounds; i++) {
    aToB();
    bToA();
  }
  // The receiver's first ACK can take one slot of a full batch (a device drop, counted as
  // such): what matters is that everything sent arrived, and that nearly all rounds moved data.
  const expected = (WARM_UP_ROUNDS + rounds) * BATCH;
  const ok =
    sb.counters.datagramsReceived === sa.counters.datagramsSent &&
    sa.counters.datagramsReceived === sb.counters.datagramsSent &&
    sa.counters.datagramsSent >= expected - BATCH &&
    sb.counters.datagramsSent >= expected - BATCH &&
    bytes === (sa.counters.datagramsSent + sb.counters.datagramsSent) * PAYLOAD;
  a.close();
  b.close();
  if (!ok) {
    throw new Error(
      `not every datagram arrived whole (sent ${sa.counters.datagramsSent} and ${sb.counters.datagramsSent} of ${expected}): the count would be meaningless`,
    );
  }
}

const THIS_SCRIPT = fileURLToPath(import.meta.url);

/** Runs one child under callgrind; returns the instructions it executed. */
function countInstructions(rounds: number, keyed: boolean, script = THIS_SCRIPT): number {
  const args = [
    "--tool=callgrind",
    "--callgrind-out-file=/dev/null",
    // V8 writes and runs its own machine code.
    "--smc-check=all-non-file",
    process.execPath,
    "--single-threaded",
    "--predictable",
    "--predictable-gc-schedule",
    script,
    "--child",
    String(rounds),
    keyed ? "keyed" : "unkeyed",
  ];
  const run = spawnSync("valgrind", args, { encoding: "utf8", timeout: 15 * 60_000 });
  if (run.error) throw new Error(`valgrind: ${run.error.message} (apt-get install valgrind)`);
  const match = /Collected\s*:\s*(\d+)/.exec(run.stderr);
  if (run.status !== 0 || !match) {
    throw new Error(`valgrind run failed (exit ${run.status}):\n${run.stderr.slice(-2000)}`);
  }
  return Number(match[1]);
}

/** This script, copied into a baseline checkout's built bench folder; returns the copy. */
function baselineScript(dir: string): string {
  const benchDir = join(resolve(dir), "packages/fake-tcp/dist/bench");
  if (!existsSync(join(benchDir, "bench-device.js"))) {
    throw new Error(`--baseline ${dir}: no built fake-tcp there (run pnpm run build in it)`);
  }
  for (const name of ["instruction-count.js", "connected-pair.js"]) {
    copyFileSync(join(dirname(THIS_SCRIPT), name), join(benchDir, name));
  }
  return join(benchDir, "instruction-count.js");
}

function main(baselineDir: string | null): void {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 500);
  const repeats = Number(process.env.BENCH_REPEATS ?? 2);
  console.log(
    `fake-tcp stack, instructions per datagram (callgrind): Node ${process.version}, IPv4, checksum offload, ` +
      `${PAYLOAD}-byte payloads, batches of ${BATCH}, ${rounds} vs ${3 * rounds} rounds each way, ${repeats} repeats`,
  );
  const configs: { name: string; keyed: boolean; script: string }[] = [
    { name: "unkeyed", keyed: false, script: THIS_SCRIPT },
    { name: "keyed", keyed: true, script: THIS_SCRIPT },
  ];
  if (baselineDir) {
    configs.push({ name: "baseline", keyed: false, script: baselineScript(baselineDir) });
  }
  const perDatagram = new Map<string, number[]>(configs.map((c) => [c.name, []]));
  for (let r = 0; r < repeats; r++) {
    // Rotating which configuration goes first keeps any drift out of the comparison.
    const order = configs.map((_, i) => configs[(i + r) % configs.length]);
    for (const c of order) {
      const short = countInstructions(rounds, c.keyed, c.script);
      const long = countInstructions(3 * rounds, c.keyed, c.script);
      const datagrams = 2 * rounds * BATCH * 2; // extra rounds × batch × both directions
      const per = (long - short) / datagrams;
      perDatagram.get(c.name)?.push(per);
      console.log(
        `  ${c.name.padEnd(8)}: ${per.toFixed(0)} instructions/datagram ` +
          `(${short.toLocaleString("en")} and ${long.toLocaleString("en")} in all)`,
      );
    }
  }
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const u = mean(perDatagram.get("unkeyed") ?? []);
  const parts = configs.map((c) => `${c.name} ${mean(perDatagram.get(c.name) ?? []).toFixed(0)}`);
  const ratios = configs
    .filter((c) => c.name !== "unkeyed")
    .map((c) => `${c.name}/unkeyed ${(mean(perDatagram.get(c.name) ?? []) / u).toFixed(3)}`);
  console.log(`mean instructions/datagram: ${parts.join(", ")}; ${ratios.join(", ")}`);
}

const argv = process.argv.slice(2);
if (argv[0] === "--child") {
  child(Number(argv[1]), argv[2] === "keyed").catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  try {
    const at = argv.indexOf("--baseline");
    main(at >= 0 ? (argv[at + 1] ?? "") : null);
  } catch (e) {
    console.error((e as Error).message);
    process.exit(1);
  }
}
