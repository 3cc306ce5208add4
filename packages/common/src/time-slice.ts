/**
 * The time slice a shard thread asks the kernel for (`--time-slice`). A shard's sends wake
 * receivers on this host (the UDP application, the other end's TUN reader), often onto the
 * shard's own core. Linux's scheduler (EEVDF, 6.12 and later) lets a woken thread with a
 * shorter slice than the running one preempt it at once; with the default slices the woken
 * receiver waits until the shard's slice ends, at the next tick (4 ms at HZ=250), while its
 * socket buffer fills. A long slice for the shard makes it the thread that gives way, with
 * no system call per send (unlike `--udp-yield`) and the same share of the CPU (a slice sets
 * how long a thread runs at a stretch, not how much). Opt-in: see DEFAULT_TIME_SLICE_MS.
 */
import { setTimeSlice } from "fake-tcp-tun";
import type { LogSink } from "./logger.js";

/**
 * Default `--time-slice`: 0, the kernel's own. A long slice costs the programs' own wake-ups
 * (they then wait for the running thread's slice instead), which showed in the echo p99; see
 * docs/benchmarks.md ("Time slice").
 */
export const DEFAULT_TIME_SLICE_MS = 0;
/** The kernel accepts 0.1-100 ms; 0 here means the kernel's own default. */
export const MIN_TIME_SLICE_MS = 0.1;
export const MAX_TIME_SLICE_MS = 100;

/**
 * Applies `--time-slice` to the calling thread (each shard calls it on its own thread).
 * Never fatal: a kernel or sandbox that refuses it leaves the default, and each shard says so.
 */
export function applyTimeSlice(ms: number, logger: LogSink): void {
  if (ms === 0) return;
  try {
    const keptNs = setTimeSlice(Math.round(ms * 1_000_000));
    if (keptNs === 0)
      logger.debug(
        { timeSliceMs: ms },
        "time slice: this kernel keeps no per-thread slice (before Linux 6.12)",
      );
    else logger.debug({ timeSliceMs: keptNs / 1_000_000 }, "time slice set");
  } catch (err) {
    logger.warn(
      { err: (err as Error).message, timeSliceMs: ms },
      "time slice: could not be set (the kernel's default stays); --time-slice 0 silences this",
    );
  }
}
