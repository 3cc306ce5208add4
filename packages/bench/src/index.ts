/**
 * fake-tcp-bench: the tunnel benchmark (`pnpm bench`, entry point `tunnel-bench.ts`). The
 * exports are its pure building blocks (used by its tests).
 */
export { type BenchOptions, parseBenchArgs } from "./cli-options.js";
export { appendRun, SECTION_TITLE } from "./docs-file.js";
export { percentile } from "./percentile.js";
export { parseProcStat, processCpuSeconds } from "./proc-stat.js";
export { type ChartSeries, logRange, logTicks, renderRateChart } from "./svg-chart.js";
export { RateSweep, type SweepConfig, type SweepStep } from "./sweep.js";
