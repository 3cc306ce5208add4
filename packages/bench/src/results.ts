/** What one `pnpm bench` run measured (shared by the runner, the table and the chart). */
import type { KeyedComparison } from "./keyed-rounds.js";
import type { LatencyResult } from "./latency.js";
import type { ScaleResult } from "./scale.js";
import type { SweepResult } from "./throughput.js";

export type PathMode = "direct" | "tunnel" | "keyed";

/** Everything measured on one path; fields stay null when a phase failed or did not run. */
export interface ModeResult {
  mode: PathMode;
  /** Why phases of this path failed ("phase: message"), empty when all ran. */
  errors: string[];
  /** Rate sweeps with iperf3's 4 MiB socket buffers. */
  forward: SweepResult | null;
  reverse: SweepResult | null;
  /**
   * The same sweeps with the kernel's default socket buffers at both iperf3 ends (a receiver
   * that never sizes its buffer); null when not measured (`--buffers 4m`, old runs).
   */
  defaultBuffers?: { forward: SweepResult | null; reverse: SweepResult | null } | null;
  /** Extra arguments both tunnel programs ran with (a `--udp-run` variant), absent: none. */
  programArgs?: string[];
  latencyIdle: LatencyResult | null;
  latencyLoaded: LatencyResult | null;
  scale: ScaleResult | null;
}

/** Which run, and on what machine and how busy it was: printed with every benchmark's figures. */
export interface RunEnvironment {
  label: string;
  startedAt: Date;
  durationSeconds: number;
  cores: number;
  nodeVersion: string;
  commit: string;
  /** 1-minute load average at the start and at the end of the run. */
  loadAverage: number;
  loadAverageEnd: number;
}

export interface BenchRun extends RunEnvironment {
  quick: boolean;
  /** Settings that shape the figures, printed with them. */
  settings: {
    /** The sweep's first offered rate (bit/s). */
    startBps: number;
    stepSeconds: number;
    probes: number;
    probeIntervalMs: number;
    /** Probes sent before those measured and left out (absent in runs before they existed). */
    warmupProbes?: number;
    loadBps: number;
    flows: number;
  };
  direct: ModeResult;
  tunnel: ModeResult;
  /** The tunnel with both programs keyed (`--keyed`): rate sweeps and idle latency only. */
  keyed?: ModeResult;
  /**
   * The tunnel again with other program arguments (`--udp-run N`), rate sweeps and loaded
   * latency only, measured right after the tunnel path.
   */
  variants?: ModeResult[];
  /** Keyed and unkeyed programs in alternating rounds (`--keyed`). */
  keyedRounds?: KeyedComparison;
}

export function emptyModeResult(mode: PathMode): ModeResult {
  return {
    mode,
    errors: [],
    forward: null,
    reverse: null,
    defaultBuffers: null,
    latencyIdle: null,
    latencyLoaded: null,
    scale: null,
  };
}
