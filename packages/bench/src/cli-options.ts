/** Command-line options of `pnpm bench` (parsed by hand: three flags need no library). */

export interface BenchOptions {
  /** Names the run in docs/benchmarks.md ("before", "after"...). */
  label: string;
  /** Shorter everything, for smoke testing. */
  quick: boolean;
  /** Print only; do not append to docs/benchmarks.md nor write the chart. */
  noDocs: boolean;
  /** Where to write benchmarks.md and the chart (default: the repository's docs/). */
  docsDir: string | null;
  /** Also measure the tunnel with both programs keyed (`--key-file`). */
  keyed: boolean;
  /** Only the single-UDP-flow comparison (`--queues 1/2`, `--flows 1/2`; single-flow.ts). */
  singleFlow: boolean;
  /**
   * Also sweep with the kernel's default socket buffers at both iperf3 ends (`--buffers`):
   * true unless `--buffers 4m`.
   */
  defaultBuffers: boolean;
  /** `--udp-run` values: the tunnel is measured once more with each (both programs). */
  udpRuns: number[];
  /** `--connections N`: only the many-connection measurement (connections.ts), with N. */
  connections: number | null;
  /** `--pace N`: with --connections, new connections a second in set-up (0: all at once). */
  pace: number;
  /** `--latency-only`: only echo latency, direct and tunnel in this many alternating rounds. */
  latencyRounds: number | null;
  help: boolean;
}

/** Most datagrams per segmented UDP send the programs accept (`--udp-run`). */
const MAX_UDP_RUN = 64;

export const USAGE = `usage: pnpm bench [--label NAME] [--quick] [--keyed] [--buffers LIST] [--udp-run LIST]
                  [--no-docs] [--docs-dir DIR]
       pnpm bench --single-flow [--quick] [--no-docs] [--docs-dir DIR]
       pnpm bench --connections N [--pace R] [--label NAME] [--no-docs] [--docs-dir DIR]
       pnpm bench --latency-only [--rounds N]
  --label NAME  names the run in docs/benchmarks.md (default "run")
  --quick       short sweeps and probes, for smoke testing (about a minute)
  --keyed       also the tunnel keyed at both ends (rate sweeps, CPU, idle latency)
  --single-flow only one UDP flow with --queues 1 / 2 and --flows 1 / 2: rates, CPU per thread, reorder depth
  --buffers L   iperf3 socket buffers to sweep with: "4m,default" (the default: both), or
                "4m" (4 MiB only); "default" is the kernel's (net.core.rmem_default)
  --udp-run L   also the tunnel with both programs at --udp-run N, for each N of the
                comma-separated list (1-64): rate sweeps and loaded latency, beside the tunnel
  --no-docs     print the table only; leave docs/ untouched
  --docs-dir D  write benchmarks.md and the chart to D instead of docs/ (trial runs)
  --connections N  only N connections at once: set-up rate, RSS per connection, spread over
                the server's shards, 1 vs 1000 active flows (N from 1000 to 30000)
  --pace R      with --connections: R new connections a second in set-up (default 100;
                0: all at once)
  --latency-only  only echo latency (idle and under load), direct and tunnel alternating on
                fresh rigs, printed per round and as medians; docs/ untouched (about 40 s a round)
  --rounds N    with --latency-only: rounds (default 3, 1 to 20)`;

/** Bounds of --connections: enough for the 1,000-flow load step; ports for the probe's sockets. */
export const MIN_CONNECTIONS = 1000;
export const MAX_CONNECTIONS = 30000;

/** Rounds of --latency-only: the default, and the most. */
export const DEFAULT_LATENCY_ROUNDS = 3;
export const MAX_LATENCY_ROUNDS = 20;

/** Parses argv (without node and script); throws an Error with a message on bad input. */
export function parseBenchArgs(argv: readonly string[]): BenchOptions {
  const opts: BenchOptions = {
    label: "run",
    quick: false,
    noDocs: false,
    docsDir: null,
    keyed: false,
    singleFlow: false,
    defaultBuffers: true,
    udpRuns: [],
    connections: null,
    pace: 100,
    latencyRounds: null,
    help: false,
  };
  let rounds: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--quick") opts.quick = true;
    else if (arg === "--no-docs") opts.noDocs = true;
    else if (arg === "--keyed") opts.keyed = true;
    else if (arg === "--single-flow") opts.singleFlow = true;
    else if (arg === "--latency-only") opts.latencyRounds = DEFAULT_LATENCY_ROUNDS;
    else if (arg === "--help" || arg === "-h") opts.help = true;
    else if (arg === "--buffers") {
      const value = argv[++i] ?? "";
      const sizes = value.split(",").map((v) => v.trim().toLowerCase());
      if (!sizes.includes("4m") || sizes.some((v) => v !== "4m" && v !== "default")) {
        throw new Error(`--buffers "${value}": use "4m,default" or "4m"`);
      }
      opts.defaultBuffers = sizes.includes("default");
    } else if (arg === "--udp-run") {
      const value = argv[++i] ?? "";
      const runs = value.split(",").map((v) => v.trim());
      if (!runs.every((v) => /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= MAX_UDP_RUN)) {
        throw new Error(
          `--udp-run "${value}": use comma-separated numbers from 1 to ${MAX_UDP_RUN}`,
        );
      }
      opts.udpRuns = [...new Set(runs.map(Number))];
    } else if (arg === "--connections") {
      const value = argv[++i] ?? "";
      const n = Number(value);
      if (!/^\d+$/.test(value) || n < MIN_CONNECTIONS || n > MAX_CONNECTIONS) {
        throw new Error(
          `--connections "${value}": give a whole number from ${MIN_CONNECTIONS} to ${MAX_CONNECTIONS}`,
        );
      }
      opts.connections = n;
    } else if (arg === "--pace") {
      const value = argv[++i] ?? "";
      if (!/^\d+$/.test(value) || Number(value) > 100_000) {
        throw new Error(
          `--pace "${value}": give new connections a second, 0 to 100000 (0: all at once)`,
        );
      }
      opts.pace = Number(value);
    } else if (arg === "--rounds") {
      const value = argv[++i] ?? "";
      const n = Number(value);
      if (!/^\d+$/.test(value) || n < 1 || n > MAX_LATENCY_ROUNDS) {
        throw new Error(`--rounds "${value}": give a whole number from 1 to ${MAX_LATENCY_ROUNDS}`);
      }
      rounds = n;
    } else if (arg === "--docs-dir") {
      const value = argv[++i];
      if (value === undefined || value === "" || value.startsWith("--")) {
        throw new Error("--docs-dir needs a directory");
      }
      opts.docsDir = value;
    } else if (arg === "--label" || arg.startsWith("--label=")) {
      const value = arg === "--label" ? argv[++i] : arg.slice("--label=".length);
      if (value === undefined || value.trim() === "" || value.startsWith("--")) {
        throw new Error("--label needs a name");
      }
      if (!/^[\w .+-]{1,40}$/.test(value)) {
        throw new Error(`--label "${value}": use up to 40 letters, digits, spaces or . _ + -`);
      }
      opts.label = value.trim();
    } else throw new Error(`unknown argument "${arg}"`);
  }
  if (opts.connections === null && argv.includes("--pace")) {
    throw new Error("--pace goes with --connections");
  }
  if (opts.connections !== null && (opts.quick || opts.keyed)) {
    throw new Error("--connections runs alone: leave out --quick and --keyed");
  }
  if (rounds !== null) {
    if (opts.latencyRounds === null) throw new Error("--rounds goes with --latency-only");
    opts.latencyRounds = rounds;
  }
  if (
    opts.latencyRounds !== null &&
    (opts.keyed || opts.singleFlow || opts.connections !== null || opts.udpRuns.length > 0)
  ) {
    throw new Error(
      "--latency-only runs alone: leave out --keyed, --single-flow, --connections and --udp-run",
    );
  }
  return opts;
}
