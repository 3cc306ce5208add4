/** Figures the end-to-end tests read from an echo stream's result. */
import type { StreamResult } from "./rig.js";

/**
 * The longest time without an echo (ms) from `from` until the last datagram was sent: gaps
 * between consecutive echoes, and the silence before the first and after the last one.
 */
export function longestSilenceMs(stream: StreamResult, from: number): number {
  const times = stream.replies
    .map(([, , at]) => at)
    .filter((at) => at >= from)
    .sort((x, y) => x - y);
  const lastSent = Math.max(stream.lastSentAt ?? from, from);
  let gap = 0;
  let previous = from;
  for (const at of times) {
    gap = Math.max(gap, at - previous);
    previous = at;
  }
  return Math.max(gap, lastSent - previous);
}
