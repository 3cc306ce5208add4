/**
 * A token bucket on a caller-supplied clock (so a coarse, cached clock can drive it):
 * `ratePerSecond` tokens a second, at most `burst` saved up. The stack meters RST replies with
 * it, the client new peers and repeated reconnects. A rate or burst of 0 never gives a token.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    if (!(ratePerSecond >= 0 && burst >= 0)) {
      throw new RangeError("a token bucket needs a rate and a burst of at least 0");
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

  /** Milliseconds until a token is available (0 when one is; Infinity when none ever will be). */
  waitMs(now: number): number {
    this.refill(now);
    if (this.tokens >= 1) return 0;
    if (this.ratePerSecond === 0 || this.burst < 1) return Number.POSITIVE_INFINITY;
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
