/**
 * `pnpm bench:instructions`: machine instructions per datagram through the stack's data path
 * (send, device copy, dispatch, receive; IPv4, checksum offload), counted by valgrind's
 * callgrind. Unlike datagrams per second, an instruction count does not depend on what else
 * the machine is doing, so two builds or two modes compare exactly on a shared machine.
 *
 * Each configuration runs twice, with `rounds` and `3 × rounds` measured rounds after the same
 * set-up and warm-up; the difference divided by the extra datagrams removes start-up, set-up
 * and warm-up from the figure. V8 runs single-threaded (no background compilation) so that
 * when code gets optimised does not depend on thread scheduling.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { BATCH, connectedPair, sendRound } from "./connected-pair.js";

const PAYLOAD = 1400;
const WARM_UP_ROUNDS = 2000;

/** The measured process: set-up, warm-up, then `rounds` rounds each way. */
async function child(rounds: number, keyed: boolean): Promise<void> {
  // A fixed key: its value changes no branch of the data path, and runs stay identical.
  const key = keyed ? new Uint8Array(32).fill(7) : undefined;
  const { qa, qb, a, b, sa, sb } = await connectedPair(true, 4, key);
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

/** Runs one child under callgrind; returns the instructions it executed. */
function countInstructions(rounds: number, keyed: boolean): number {
  const script = fileURLToPath(import.meta.url);
  const args = [
    "--tool=callgrind",
    "--callgrind-out-file=/dev/null",
    // V8 writes and runs its own machine code.
    "--smc-check=all-non-file",
    process.execPath,
    "--single-threaded",
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

function main(): void {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 500);
  const repeats = Number(process.env.BENCH_REPEATS ?? 2);
  console.log(
    `fake-tcp stack, instructions per datagram (callgrind): Node ${process.version}, IPv4, checksum offload, ` +
      `${PAYLOAD}-byte payloads, batches of ${BATCH}, ${rounds} vs ${3 * rounds} rounds each way, ${repeats} repeats`,
  );
  const perDatagram: Record<string, number[]> = { unkeyed: [], keyed: [] };
  for (let r = 0; r < repeats; r++) {
    // Alternating which mode goes first keeps any drift of the machine out of the comparison.
    const order = r % 2 === 0 ? [false, true] : [true, false];
    for (const keyed of order) {
      const short = countInstructions(rounds, keyed);
      const long = countInstructions(3 * rounds, keyed);
      const datagrams = 2 * rounds * BATCH * 2; // extra rounds × batch × both directions
      const per = (long - short) / datagrams;
      perDatagram[keyed ? "keyed" : "unkeyed"].push(per);
      console.log(
        `  ${keyed ? "keyed  " : "unkeyed"}: ${per.toFixed(0)} instructions/datagram ` +
          `(${short.toLocaleString("en")} and ${long.toLocaleString("en")} in all)`,
      );
    }
  }
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const u = mean(perDatagram.unkeyed);
  const k = mean(perDatagram.keyed);
  console.log(
    `mean: unkeyed ${u.toFixed(0)}, keyed ${k.toFixed(0)} instructions/datagram; keyed/unkeyed ${(k / u).toFixed(3)}`,
  );
}

const argv = process.argv.slice(2);
if (argv[0] === "--child") {
  child(Number(argv[1]), argv[2] === "keyed").catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  try {
    main();
  } catch (e) {
    console.error((e as Error).message);
    process.exit(1);
  }
}
