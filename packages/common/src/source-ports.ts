/**
 * The client stack's source ports under the automatic host rules. Those rules rewrite the
 * stack's segments statelessly to the host's own address (see `nft.ts`), so a stack flow and
 * a socket of the host towards the same server port must never share a source port: nothing
 * (no conntrack) would tell their segments apart. The host's own sockets take their ports
 * from `net.ipv4.ip_local_port_range` (IPv6 too), so the stack takes its ports outside it.
 */
import { readFileSync } from "node:fs";
import { EPHEMERAL_PORTS, type PortRange } from "fake-tcp";

const LOCAL_PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range";

/** Fewest ports worth using: with fewer outside the host's range, the default is kept. */
const MIN_PORTS = 1024;

/**
 * The larger of the two stretches of unprivileged ports (1024..65535) outside the host range
 * `text` ("32768\t60999"), or undefined when it is unreadable or leaves fewer than 1,024.
 */
export function portsOutside(text: string): PortRange | undefined {
  const match = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  if (!match) return undefined;
  const low = Number(match[1]);
  const high = Number(match[2]);
  if (low > high || high > 65535) return undefined;
  const below = { first: 1024, count: Math.max(0, low - 1024) };
  const above = {
    first: Math.max(1024, high + 1),
    count: Math.max(0, 65535 - Math.max(1023, high)),
  };
  const best = below.count >= above.count ? below : above;
  return best.count >= MIN_PORTS ? best : undefined;
}

/**
 * The stack's source ports on this host: outside `ip_local_port_range` (with Linux's default
 * range, 1024..32767), or Linux's default ephemeral range if the host's range leaves too few
 * (then a collision with one of the host's own connections to the same server port is
 * possible, as for any two programs that pick ports without asking the kernel).
 */
export function hostSourcePorts(path = LOCAL_PORT_RANGE): PortRange {
  let text = "";
  try {
    text = readFileSync(path, "utf8");
  } catch {}
  return portsOutside(text) ?? EPHEMERAL_PORTS;
}
