/**
 * Turns low-level failures (errno from the addon, exit status from `ip`) into errors that
 * say what to do. Every error keeps the errno name in `code` so callers can branch on it.
 */

import { existsSync } from "node:fs";

/** An Error with a Node-style `code` (errno name such as "EBUSY", or an ERR_* code). */
export interface TunError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

/** Creates a TunError with `code` and an optional underlying cause. */
export function tunError(code: string, message: string, cause?: unknown): TunError {
  const error = new Error(message, cause === undefined ? undefined : { cause }) as TunError;
  error.code = code;
  return error;
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "EUNKNOWN";
}

const NEEDS_NET_ADMIN =
  "missing CAP_NET_ADMIN: run as root or grant CAP_NET_ADMIN (e.g. `setcap cap_net_admin+ep $(command -v node)`, or `--cap-add NET_ADMIN` for a container)";

/** Explains a failure to open or attach a TUN queue (open(2) or TUNSETIFF). */
export function explainOpenError(error: unknown, name: string, devicePath: string): TunError {
  let code = codeOf(error);
  // The first queue is opened exclusively, so the kernel answers EBUSY for any existing
  // name; an interface that is not a TUN device at all deserves its own explanation.
  if (code === "EBUSY" && name !== "" && isNonTunInterface(name)) code = "EINVAL";
  const label = name === "" ? "a new TUN device" : `TUN device "${name}"`;
  let hint: string;
  switch (code) {
    case "ENOENT":
    case "ENODEV":
    case "ENXIO":
      hint = `${devicePath} is missing: load the module with \`modprobe tun\`, or in a container pass the device in (\`--device /dev/net/tun\`)`;
      break;
    case "EPERM":
      hint = NEEDS_NET_ADMIN;
      break;
    case "EACCES":
      // open(2) itself was refused: the device file's mode or owner shuts this user out.
      hint = `${devicePath} is not open to this user (see \`ls -l ${devicePath}\`; mode 0666 is the usual default): run as root, or make it accessible and grant CAP_NET_ADMIN (e.g. \`setcap cap_net_admin+ep $(command -v node)\`)`;
      break;
    case "EBUSY":
      hint = `the name "${name}" is already in use by another process's TUN device: choose another --tun name or stop the other process`;
      break;
    case "EINVAL":
      hint = `"${name}" exists but is not a TUN device of the same kind (multi-queue, vnet header): choose another --tun name`;
      break;
    default:
      hint = (error as Error)?.message ?? String(error);
  }
  return tunError(code, `cannot open ${label}: ${hint}`, error);
}

/** Explains a failure to configure an interface (MTU, queue length, up). */
export function explainConfigError(error: unknown, name: string, what: string): TunError {
  const code = codeOf(error);
  let hint = (error as Error)?.message ?? String(error);
  if (code === "EPERM" || code === "EACCES") hint = NEEDS_NET_ADMIN;
  else if (code === "ENODEV") hint = `device ${name} vanished`;
  else if (code === "EINVAL" && what.startsWith("MTU"))
    hint = "the kernel rejected it (valid range 68..65535; IPv6 needs at least 1280)";
  return tunError(code, `cannot set ${what} on ${name}: ${hint}`, error);
}

/** True when an interface of this name exists in this namespace and is not a TUN/TAP device. */
function isNonTunInterface(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`) && !existsSync(`/sys/class/net/${name}/tun_flags`);
}
