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
