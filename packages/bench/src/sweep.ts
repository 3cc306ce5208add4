/**
 * The bounded rate sweep: which iperf3 rate to offer next, given the steps measured so far.
 * Pure logic (no I/O), so it is unit-tested and the benchmark's run time stays bounded.
 *
 * Strategy: start at `startBps` and double while loss stays under the limit; once a rate
 * loses too much, bisect between the best good rate and the lowest bad one for a few steps.
 * If the start rate already loses too much, halve until a rate is good (or `minBps` is
 * passed). Stops early when the sender cannot reach the offered rate (then a higher offer
 * measures the sender, not the path) and always after `maxSteps` steps. Optionally the first
 * bad rate is measured twice (noise from other work on the machine).
 */

/** One measured step of the sweep (rates in bits per second). */
export interface SweepStep {
  offeredBps: number;
  /** What the sender actually sent. */
  sentBps: number;
  /** What the receiver got. */
  deliveredBps: number;
  lossPercent: number;
}

export interface SweepConfig {
  startBps: number;
  /** Highest rate ever offered. */
  maxBps: number;
  /** Lowest rate ever offered when halving down. */
  minBps: number;
  /** A step is good when its loss is strictly below this (percent). Default 1. */
  lossLimitPercent?: number;
  /** Bisection steps after the first bad rate. Default 3. */
  bisectSteps?: number;
  /** Hard cap on the number of steps. */
  maxSteps: number;
  /**
   * Measure the first bad rate a second time and believe the second result: on a shared
   * machine one noisy step would otherwise end the doubling early. Default false.
   */
  retryFirstBad?: boolean;
  /**
   * A good step whose sender reached less than this fraction of the offered rate ends the
   * sweep (the sender is saturated). Default 0.85.
   */
  senderShortfall?: number;
}

/** Why the sweep ended. */
export type SweepEnd =
  | "bracketed"
  | "max-rate"
  | "min-rate"
  | "sender-limited"
  | "max-steps"
  | "running";

export class RateSweep {
  readonly steps: SweepStep[] = [];
  private bestGood: SweepStep | null = null;
  private lowestBad: SweepStep | null = null;
  private bisections = 0;
  private retried = false;
  private pending: number | null;
  private endReason: SweepEnd = "running";
  private readonly lossLimit: number;
  private readonly bisectSteps: number;
  private readonly shortfall: number;

  constructor(readonly config: SweepConfig) {
    if (!(config.startBps > 0 && config.minBps > 0 && config.maxBps >= config.startBps)) {
      throw new RangeError("sweep rates must satisfy 0 < minBps, 0 < startBps <= maxBps");
    }
    this.lossLimit = config.lossLimitPercent ?? 1;
    this.bisectSteps = config.bisectSteps ?? 3;
    this.shortfall = config.senderShortfall ?? 0.85;
    this.pending = config.startBps;
  }

  /** The rate to offer next, or null when the sweep is over. */
  next(): number | null {
    return this.pending;
  }

  /** True when a step counts as good (loss under the limit). */
  isGood(step: SweepStep): boolean {
    return step.lossPercent < this.lossLimit;
  }

  /** Records the measurement of the rate `next()` returned and decides the following one. */
  record(step: SweepStep): void {
    if (this.pending === null) throw new Error("the sweep is over");
    this.steps.push(step);
    const good = this.isGood(step);
    if (!good && !this.lowestBad && !this.retried && this.config.retryFirstBad) {
      this.retried = true;
      this.pending =
        this.steps.length >= this.config.maxSteps ? this.finish("max-steps") : step.offeredBps;
      return;
    }
    if (good) {
      if (!this.bestGood || step.offeredBps > this.bestGood.offeredBps) this.bestGood = step;
    } else if (!this.lowestBad || step.offeredBps < this.lowestBad.offeredBps) {
      this.lowestBad = step;
    }
    this.pending = this.decide(step, good);
  }

  private finish(reason: SweepEnd): null {
    this.endReason = reason;
    return null;
  }

  private decide(step: SweepStep, good: boolean): number | null {
    const { maxBps, minBps, maxSteps } = this.config;
    if (good && step.sentBps < this.shortfall * step.offeredBps) {
      return this.finish("sender-limited");
    }
    if (this.steps.length >= maxSteps) return this.finish("max-steps");
    const best = this.bestGood;
    const bad = this.lowestBad;
    if (best && !bad) {
      if (best.offeredBps >= maxBps) return this.finish("max-rate");
      return Math.min(best.offeredBps * 2, maxBps);
    }
    if (bad && !best) {
      const lower = bad.offeredBps / 2;
      if (lower < minBps) return this.finish("min-rate");
      return lower;
    }
    if (!best || !bad) return this.finish("bracketed"); // unreachable: one step exists
    if (this.bisections >= this.bisectSteps) return this.finish("bracketed");
    const mid = Math.round((best.offeredBps + bad.offeredBps) / 2);
    if (mid <= best.offeredBps || mid >= bad.offeredBps) return this.finish("bracketed");
    this.bisections++;
    return mid;
  }

  /** Why the sweep ended ("running" while it has not). */
  get end(): SweepEnd {
    return this.endReason;
  }

  /**
   * The good step that delivered the most, or null if no step was good. (Usually the one
   * with the highest offered rate too, but not when the sender fell short of a higher offer.)
   */
  get best(): SweepStep | null {
    let best: SweepStep | null = null;
    for (const step of this.steps) {
      if (this.isGood(step) && (!best || step.deliveredBps > best.deliveredBps)) best = step;
    }
    return best;
  }
}
