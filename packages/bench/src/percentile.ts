/** Order statistics of latency samples. */

/**
 * The p-th percentile (0..100) of `values` by the nearest-rank method: the smallest value
 * such that at least p % of the samples are less than or equal to it. NaN for no samples.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is outside 0..100`);
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}
