/**
 * TCP sequence-number arithmetic, modulo 2^32. Sequence and acknowledgment numbers are kept
 * as int32 (`x | 0`) everywhere in the stack, so these helpers take and return int32 and
 * never allocate. "Before" and "after" follow RFC 793/RFC 1982: `a` is before `b` when
 * `b - a` (mod 2^32) lies in 1 .. 2^31 - 1.
 */

/** `a + n` modulo 2^32, as int32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) | 0;
}

/** The signed distance from `b` to `a` (`a - b`), in -2^31 .. 2^31 - 1. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** True when `a` comes strictly before `b`. */
export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

/** True when `a` comes before `b` or equals it. */
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

/** True when `a` comes strictly after `b`. */
export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

/** True when `a` comes after `b` or equals it. */
export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** The later of two sequence numbers. */
export function seqMax(a: number, b: number): number {
  return ((a - b) | 0) >= 0 ? a | 0 : b | 0;
}

/**
 * True when `x` lies in the window `[base - behind, base + ahead]` (both ends included),
 * modulo 2^32. `behind` and `ahead` are non-negative and together below 2^31.
 */
export function seqInWindow(x: number, base: number, behind: number, ahead: number): boolean {
  const d = (x - base) | 0;
  return d >= -behind && d <= ahead;
}
