/**
 * A token bucket on a caller-supplied clock: `ratePerSecond` tokens a second, at most `burst`
 * saved up. The client meters new peers and repeated reconnects with it.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    if (!(ratePerSecond > 0 && burst >= 1)) {
      throw new RangeError("a token bucket needs a positive rate and a burst of at least 1");
    }
    this.tokens = burst;
    this.last = now;
  }

  /** Takes one token if there is one. `now` in ms. */
  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until a token is available (0 when one is). */
  waitMs(now: number): number {
    this.refill(now);
    if (this.tokens >= 1) return 0;
    return Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSecond);
  }

  private refill(now: number): void {
    if (now <= this.last) return;
    this.tokens = Math.min(
      this.burst,
      this.tokens + ((now - this.last) * this.ratePerSecond) / 1000,
    );
    this.last = now;
  }
}
