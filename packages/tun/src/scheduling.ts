/** Scheduling help for threads that deliver datagrams to receivers on the same host. */
import { addon } from "./native.js";

/**
 * Lets another runnable thread of this core run before the caller continues (sched_yield);
 * returns at once when there is none. Meant for right after a send that may have woken a
 * local receiver: the kernel tends to wake it on the sender's core, where it would otherwise
 * wait until the sender's time slice ends while its socket buffer fills.
 */
export function yieldCore(): void {
  addon.yieldCore();
}

/**
 * Asks for a time slice of `ns` nanoseconds for the calling thread (0: the kernel's default)
 * and returns the slice the kernel then keeps, 0 where it keeps none per thread (before Linux
 * 6.12). A thread that delivers to local receivers wants a long one: a woken thread with a
 * shorter slice may preempt it at once, so a receiver its sends woke on its core reads before
 * the next batch instead of at the end of the slice.
 */
export function setTimeSlice(ns: number): number {
  return addon.setTimeSlice(ns);
}
