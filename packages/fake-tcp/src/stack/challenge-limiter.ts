/**
 * The stack-wide limit on challenge ACKs (answers to doubtful RSTs and to segments outside
 * the windows). Each second allows a budget drawn at random between `perSecond` and 1.5 x
 * `perSecond`: with a fixed, known budget an off-path attacker who can trigger challenges on
 * a connection of its own could count how many we sent elsewhere and so learn whether its
 * guesses on another connection landed in the window (the known weakness of a fixed global
 * challenge-ACK limit).
 */
export class ChallengeLimiter {
  private windowStart = Number.NEGATIVE_INFINITY;
  private left = 0;

  constructor(
    private readonly perSecond: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** Takes one challenge from the current second's budget. `now` is in ms. */
  take(now: number): boolean {
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.left = this.perSecond + Math.floor(this.random() * (this.perSecond / 2 + 1));
    }
    if (this.left <= 0) return false;
    this.left--;
    return true;
  }
}
