/**
 * Turns a failure to create or configure the TUN device into a one-line `UsageError`.
 * Errors from `fake-tcp-tun` carry an errno name in `code` and a message that already names
 * the problem and the fix (missing /dev/net/tun, CAP_NET_ADMIN, name in use...).
 */
import { errnoCode, oneLine, UsageError } from "./errors.js";

/** A `UsageError` for a TUN failure, or the error itself when it is not a system error. */
export function describeTunError(err: unknown, tun: string): unknown {
  const code = errnoCode(err);
  if (code === undefined) return err;
  const message = oneLine(err);
  // The library's messages name the device already; add it when one does not.
  return new UsageError(message.includes(tun) ? message : `TUN device "${tun}": ${message}`);
}
