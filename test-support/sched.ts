/**
 * Reading threads' scheduler time slices back from /proc (`--time-slice`, the addon's
 * setTimeSlice): each thread's `sched` file has a line `se.slice : <ns>` on kernels that keep a
 * slice per thread (Linux 6.12 and later), none before.
 */

/** Every `se.slice` value in `text` (one or more threads' sched files, concatenated), in ns. */
export function schedSlices(text: string): number[] {
  return [...text.matchAll(/^se\.slice\s*:\s*(\d+)\s*$/gm)].map((m) => Number(m[1]));
}
