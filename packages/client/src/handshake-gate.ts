/**
 * A bound on the handshakes one client shard runs at once; the rest wait their turn in
 * arrival order.
 *
 * Why: when thousands of UDP peers appear together (every peer reconnects after a server
 * restart), starting every handshake at once means thousands of SYNs, cookies and SYN-ACKs in
 * the queues of the two programs' threads. On a busy machine those threads wait for a core,
 * the handshakes outlive their budget (three SYNs a second apart), fail, and the peers retry
 * after a back-off, so the work grows while little completes. With the bound, the handshakes
 * in flight are few enough to finish inside the budget, and the rest start as slots free up.
 *
 * The bound adapts, like a congestion window (additive increase, multiplicative decrease):
 * - A handshake that completed within {@link SLOW_HANDSHAKE_MS} (its first SYN was answered
 *   before the stack would have sent the second) while others waited: the bound grows by one,
 *   up to {@link MAX_LIMIT}. On an idle machine a handshake takes a millisecond or so and
 *   even the initial bound admits far more per second than `--new-peer-rate` lets in.
 * - A handshake that timed out, or completed only after a SYN was sent again: the bound halves,
 *   down to {@link MIN_LIMIT}, at most once per {@link SLOW_HANDSHAKE_MS} (the handshakes
 *   started together are late together: one cut for the lot).
 * - A refused connection (RST, no local address) says nothing about load: no change.
 */

/** How one admitted handshake ended. */
export type HandshakeOutcome = "completed" | "timed-out" | "failed";

/** Ends an admitted handshake, freeing its slot (later calls are ignored). */
export type ReleaseHandshake = (outcome: HandshakeOutcome) => void;

/** Leaves the queue before the turn came (nothing happens once admitted). */
export type LeaveGate = () => void;

/** The bound a shard starts with. */
export const INITIAL_LIMIT = 64;
export const MIN_LIMIT = 4;
export const MAX_LIMIT = 1024;
/** The stack resends the SYN after this long: a handshake slower than this was in trouble. */
export const SLOW_HANDSHAKE_MS = 1_000;

/** Counters for the shard's stats line. */
export interface HandshakeGateCounters {
  /** Handshakes waiting for a slot now. */
  handshakesWaiting: number;
  /** Handshakes running now. */
  handshakesInFlight: number;
  /** Handshakes that had to wait for a slot (counted once each). */
  handshakesQueued: number;
  /** The bound now. */
  handshakeLimit: number;
}

export interface HandshakeGateOptions {
  readonly initial?: number;
  readonly min?: number;
  readonly max?: number;
  /** The clock (ms); injected by tests. */
  readonly now?: () => number;
}

type Turn = (release: ReleaseHandshake) => void;

export class HandshakeGate {
  /** Waiting turns in arrival order (a Set: leaving the middle of the queue is O(1)). */
  private readonly queue = new Set<Turn>();
  private readonly min: number;
  private readonly max: number;
  private readonly now: () => number;
  /** The bound. */
  private limit: number;
  private inFlight = 0;
  /** Handshakes that had to wait for a slot, ever. */
  private queued = 0;
  /** When the bound was last cut (a cut per slow period at most). */
  private cutAt = Number.NEGATIVE_INFINITY;

  constructor(options: HandshakeGateOptions = {}) {
    this.min = options.min ?? MIN_LIMIT;
    this.max = options.max ?? MAX_LIMIT;
    this.limit = Math.min(
      this.max,
      Math.max(this.min, Math.floor(options.initial ?? INITIAL_LIMIT)),
    );
    this.now = options.now ?? Date.now;
  }

  /** The counters for the shard's stats line, read from the gate's state. */
  get counters(): HandshakeGateCounters {
    return {
      handshakesWaiting: this.queue.size,
      handshakesInFlight: this.inFlight,
      handshakesQueued: this.queued,
      handshakeLimit: this.limit,
    };
  }

  /**
   * Runs `turn` now if a slot is free, else when one frees up (first come, first served).
   * `turn` gets the function that ends its handshake: it must be called once the handshake
   * completed or failed (a throwing `turn` releases its slot itself). Returns the way out of
   * the queue for a waiter that no longer wants its turn.
   */
  enter(turn: Turn): LeaveGate {
    if (this.inFlight < this.limit && this.queue.size === 0) {
      this.admit(turn);
      return noop;
    }
    this.queue.add(turn);
    this.queued++;
    return () => {
      this.queue.delete(turn);
    };
  }

  /** `task` once a slot is free; the slot is held until its promise settles. */
  run<T>(task: () => Promise<T>, outcomeOf: (err: unknown) => HandshakeOutcome): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.enter((release) => {
        task().then(
          (value) => {
            release("completed");
            resolve(value);
          },
          (err: unknown) => {
            release(outcomeOf(err));
            reject(err);
          },
        );
      });
    });
  }

  /** Leaves every waiting turn out (at stop): none of them runs. */
  clear(): void {
    this.queue.clear();
  }

  private admit(turn: Turn): void {
    this.inFlight++;
    const startedAt = this.now();
    let released = false;
    const release: ReleaseHandshake = (outcome) => {
      if (released) return;
      released = true;
      this.inFlight--;
      this.adapt(outcome, this.now() - startedAt);
      this.admitWaiting();
    };
    try {
      turn(release);
    } catch (err) {
      release("failed");
      throw err;
    }
  }

  private adapt(outcome: HandshakeOutcome, tookMs: number): void {
    if (outcome === "failed") return;
    if (outcome === "timed-out" || tookMs > SLOW_HANDSHAKE_MS) {
      const now = this.now();
      if (now - this.cutAt < SLOW_HANDSHAKE_MS) return;
      this.cutAt = now;
      this.limit = Math.max(this.min, Math.floor(this.limit / 2));
    } else if (this.queue.size > 0) {
      this.limit = Math.min(this.max, this.limit + 1);
    }
  }

  private admitWaiting(): void {
    while (this.inFlight < this.limit) {
      const next = this.queue.values().next();
      if (next.done) break;
      this.queue.delete(next.value);
      this.admit(next.value);
    }
  }
}

function noop(): void {}

/** The outcome of a connect() that rejected with `err`: a timeout is a sign of load. */
export function handshakeOutcomeOf(err: unknown): HandshakeOutcome {
  return (err as { code?: unknown } | null)?.code === "ETIMEDOUT" ? "timed-out" : "failed";
}
