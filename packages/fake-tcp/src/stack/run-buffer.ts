/**
 * The staging of a run for segmentation offload: payloads of one size (the last may be
 * shorter) copied back to back, so that one write hands them all to a device or socket that
 * splits them again at that size. The stack's TCP runs and the programs' UDP runs share it;
 * each owner keeps what identifies its run (socket, destination, sequence numbers) and says
 * how to write it.
 */
/**
 * Schedules the end-of-task flush. A settled promise's `then` queues a plain microtask; Node's
 * `queueMicrotask` also makes an async resource and a bound function for each call, which
 * cost about as much again on a path taken once per wake-up per run buffer. An exception in
 * the flush reaches the programs' fatal handler either way (unhandled rejection or uncaught
 * exception).
 */
const settled = Promise.resolve();

export class RunBuffer {
  /** Payload size of the run's segments (the first payload's length). */
  segmentSize = 0;
  /** Payloads in the run. */
  count = 0;
  private length = 0;
  private staging: Buffer;
  /** The last payload was shorter than `segmentSize`: nothing more may join. */
  private closed = false;
  private flushScheduled = false;
  private readonly flushTask = (): void => {
    this.flushScheduled = false;
    this.writeRun();
  };

  /**
   * `capacity`: most bytes of a run; `maxCount`: most payloads; `writeRun`: writes the
   * pending run (calling {@link take}), called at the end of the task in which it started
   * unless the owner wrote it earlier.
   */
  constructor(
    capacity: number,
    private readonly maxCount: number,
    private readonly writeRun: () => void,
  ) {
    this.staging = Buffer.allocUnsafe(capacity);
  }

  /**
   * Makes room for a run of `bytes` before it starts (the buffer is replaced only when it is
   * smaller, so an owner allocates once per limit it meets). Only while the run is empty.
   */
  reserve(bytes: number): void {
    if (this.staging.length < bytes) this.staging = Buffer.allocUnsafe(bytes);
  }

  /** True when a payload of `len` bytes may join the current, non-empty run of at most `limit` bytes. */
  fits(len: number, limit = this.staging.length): boolean {
    return (
      !this.closed &&
      len <= this.segmentSize &&
      this.length + len <= limit &&
      this.count < this.maxCount
    );
  }

  /**
   * Copies `payload` into the run (starting one when empty). The caller has checked
   * {@link fits} for a non-empty run, and that the payload fits `capacity`.
   */
  push(payload: Uint8Array): void {
    const len = payload.length;
    if (this.count === 0) {
      this.segmentSize = len;
      this.closed = false;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        settled.then(this.flushTask);
      }
    } else if (len < this.segmentSize) this.closed = true;
    this.staging.set(payload, this.length);
    this.length += len;
    this.count++;
  }

  /** The run's payloads, back to back (valid until the next push); empties the run. */
  take(): Buffer {
    const run = this.staging.subarray(0, this.length);
    this.count = 0;
    this.length = 0;
    return run;
  }
}
