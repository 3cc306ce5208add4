/**
 * IP address text <-> numeric forms. IPv4 addresses are unsigned 32-bit numbers; IPv6
 * addresses are four unsigned 32-bit words, most significant first.
 */
import { isIPv4, isIPv6 } from "node:net";

/** Parses dotted-quad IPv4 text into an unsigned 32-bit number, or null when invalid. */
export function parseIpv4(text: string): number | null {
  if (!isIPv4(text)) return null;
  const parts = text.split(".");
  return ((+parts[0] << 24) | (+parts[1] << 16) | (+parts[2] << 8) | +parts[3]) >>> 0;
}

/** Formats an unsigned 32-bit number as dotted-quad IPv4 text. */
export function formatIpv4(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}`;
}

/** Parses IPv6 text (including `::` and an embedded IPv4 tail) into four words, or null. */
export function parseIpv6(text: string): [number, number, number, number] | null {
  if (!isIPv6(text)) return null;
  let body = text;
  const zone = body.indexOf("%");
  if (zone >= 0) body = body.slice(0, zone);
  const groups: number[] = [];
  const expand = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    for (const g of part.split(":")) {
      if (g.includes(".")) {
        const v4 = parseIpv4(g);
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const gap = body.indexOf("::");
  if (gap >= 0) {
    const head = expand(body.slice(0, gap));
    const tail = expand(body.slice(gap + 2));
    if (!head || !tail) return null;
    groups.push(...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail);
  } else {
    const all = expand(body);
    if (!all) return null;
    groups.push(...all);
  }
  if (groups.length !== 8) return null;
  return [
    ((groups[0] << 16) | groups[1]) >>> 0,
    ((groups[2] << 16) | groups[3]) >>> 0,
    ((groups[4] << 16) | groups[5]) >>> 0,
    ((groups[6] << 16) | groups[7]) >>> 0,
  ];
}

/** Formats four words as canonical IPv6 text (RFC 5952: lower case, longest zero run as `::`). */
export function formatIpv6(words: ArrayLike<number>): string {
  const g: number[] = [];
  for (let i = 0; i < 4; i++) g.push((words[i] >>> 16) & 0xffff, words[i] & 0xffff);
  let bestStart = -1;
  let bestLen = 1; // a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** An IP endpoint as text: address and port. */
export interface Endpoint {
  address: string;
  port: number;
}

/**
 * Parses an endpoint given as `{address, port}`, `"a.b.c.d:port"` or `"[v6]:port"`.
 * Throws a TypeError naming the bad input (this is configuration, not the packet path).
 */
export function parseEndpoint(input: Endpoint | string): {
  address: string;
  port: number;
  family: 4 | 6;
} {
  let address: string;
  let port: number;
  if (typeof input === "string") {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(input) ?? /^([^:]+):(\d+)$/.exec(input);
    if (!m) throw new TypeError(`invalid endpoint "${input}": expected "ip:port" or "[ipv6]:port"`);
    address = m[1];
    port = Number(m[2]);
  } else {
    address = input.address;
    port = input.port;
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new TypeError(`invalid port ${port} in endpoint ${JSON.stringify(input)}`);
  if (isIPv4(address)) return { address, port, family: 4 };
  if (isIPv6(address)) return { address, port, family: 6 };
  throw new TypeError(`invalid IP address "${address}" in endpoint ${JSON.stringify(input)}`);
}
