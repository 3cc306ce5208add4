/**
 * What a TUN queue, a UDP socket and a netfilter queue share over their native object: a
 * non-blocking fd polled on the thread's event loop, which may or may not keep the thread
 * alive, counters by name, and close.
 */
import type { NativePolled } from "./native.js";

export abstract class PolledHandle<S> {
  readonly #native: NativePolled<S>;

  protected constructor(native: NativePolled<S>) {
    this.#native = native;
  }

  /** The file descriptor, or -1 once closed. */
  get fd(): number {
    return this.#native.fd;
  }

  /** Lets the thread exit while this waits for input (like `socket.unref()`). */
  unref(): this {
    this.#native.ref(false);
    return this;
  }

  /** Undoes {@link unref}: an active reader keeps the thread alive again. */
  ref(): this {
    this.#native.ref(true);
    return this;
  }

  /** Counters since it was opened (they survive close()). */
  stats(): S {
    return this.#native.stats();
  }

  /**
   * Stops receiving and closes the fd. Idempotent, safe inside the receive handler; writes
   * after close return false. Runs by itself when the thread or process ends.
   */
  close(): void {
    this.#native.close();
  }
}
