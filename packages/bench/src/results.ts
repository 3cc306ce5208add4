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
  forward: SweepResult | null;
  reverse: SweepResult | null;
  latencyIdle: LatencyResult | null;
  latencyLoaded: LatencyResult | null;
  scale: ScaleResult | null;
}

export interface BenchRun {
  label: string;
  quick: boolean;
  startedAt: Date;
  durationSeconds: number;
  cores: number;
  nodeVersion: string;
  commit: string;
  /** 1-minute load average at the start and at the end of the run. */
  loadAverage: number;
  loadAverageEnd: number;
  /** Settings that shape the figures, printed with them. */
  settings: {
    /** The sweep's first offered rate (bit/s). */
    startBps: number;
    stepSeconds: number;
    probes: number;
    probeIntervalMs: number;
    loadBps: number;
    flows: number;
  };
  direct: ModeResult;
  tunnel: ModeResult;
  /** The tunnel with both programs keyed (`--keyed`): rate sweeps and idle latency only. */
  keyed?: ModeResult;
  /** Keyed and unkeyed programs in alternating rounds (`--keyed`). */
  keyedRounds?: KeyedComparison;
}

export function emptyModeResult(mode: PathMode): ModeResult {
  return {
    mode,
    errors: [],
    forward: null,
    reverse: null,
    latencyIdle: null,
    latencyLoaded: null,
    scale: null,
  };
}
