/**
 * Parsing of the address forms the programs accept on the command line.
 *
 * `PORT`, `IP:PORT`, `[IPv6]:PORT` and `HOST:PORT`; IP addresses are checked with
 * `node:net`, host names against the DNS label rules, so errors name exactly what is wrong.
 */
import { isIP, isIPv4, isIPv6 } from "node:net";
import { UsageError } from "./errors.js";

/** An IP address and port. `family` is 4 or 6. */
export interface SocketAddress {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/** A host (name or IP literal) and port, before name resolution. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
  /** 4 or 6 when `host` is an IP literal, 0 for a name to resolve. */
  readonly family: 0 | 4 | 6;
}

/** Parses a port number 1..65535 given as decimal text. */
export function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) {
    throw new UsageError(`${what}: "${text}" is not a port number (expected 1-65535)`);
  }
  const port = Number(text);
  if (port < 1 || port > 65535) {
    throw new UsageError(`${what}: port ${port} is out of range (expected 1-65535)`);
  }
  return port;
}

/** Splits `HOST:PORT` or `[IPv6]:PORT`; returns null when there is no port part. */
function splitHostPort(text: string): { host: string; port: string; bracketed: boolean } | null {
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return null;
    return { host: text.slice(1, close), port: text.slice(close + 2), bracketed: true };
  }
  const colon = text.lastIndexOf(":");
  if (colon < 0) return null;
  const host = text.slice(0, colon);
  // An unbracketed IPv6 address ("::1:80") is ambiguous: insist on brackets.
  if (host.includes(":")) return null;
  return { host, port: text.slice(colon + 1), bracketed: false };
}

const HOST_LABEL = /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/;

/** True when `name` is a syntactically valid DNS host name. */
export function isHostName(name: string): boolean {
  const trimmed = name.endsWith(".") ? name.slice(0, -1) : name;
  if (trimmed.length === 0 || trimmed.length > 253) return false;
  return trimmed.split(".").every((label) => HOST_LABEL.test(label));
}

/**
 * Parses a local UDP listen address: `PORT` (meaning 127.0.0.1:PORT), `IP:PORT` or
 * `[IPv6]:PORT`. Host names are refused: a listen address must be an IP.
 */
export function parseListenAddress(text: string, what: string): SocketAddress {
  const value = text.trim();
  if (/^\d+$/.test(value)) {
    return { address: "127.0.0.1", port: parsePort(value, what), family: 4 };
  }
  const parts = splitHostPort(value);
  if (!parts) {
    throw new UsageError(
      `${what}: "${text}" is not PORT, IP:PORT or [IPv6]:PORT (e.g. 1234, 127.0.0.1:1234, [::1]:1234)`,
    );
  }
  const family = isIP(parts.host);
  if (family === 0 || (parts.bracketed && family !== 6)) {
    throw new UsageError(`${what}: "${parts.host}" is not an IP address (e.g. 127.0.0.1 or [::1])`);
  }
  return { address: parts.host, port: parsePort(parts.port, what), family: family as 4 | 6 };
}

/** Parses `HOST:PORT`, `IP:PORT` or `[IPv6]:PORT` (a remote endpoint; names resolved later). */
export function parseHostPort(text: string, what: string): HostPort {
  const value = text.trim();
  const parts = splitHostPort(value);
  if (!parts) {
    throw new UsageError(
      `${what}: "${text}" is not HOST:PORT, IP:PORT or [IPv6]:PORT (e.g. example.com:4567, [2001:db8::1]:4567)`,
    );
  }
  const family = isIP(parts.host);
  if (parts.bracketed && family !== 6) {
    throw new UsageError(`${what}: "[${parts.host}]" is not an IPv6 address`);
  }
  if (family === 0 && !isHostName(parts.host)) {
    throw new UsageError(`${what}: "${parts.host}" is neither an IP address nor a valid host name`);
  }
  return { host: parts.host, port: parsePort(parts.port, what), family: family as 0 | 4 | 6 };
}

/** Parses a bare IPv4 address (for the TUN address flags). */
export function parseIPv4(text: string, what: string): string {
  const value = text.trim();
  if (!isIPv4(value)) throw new UsageError(`${what}: "${text}" is not an IPv4 address`);
  return value;
}

/** Parses a bare IPv6 address (for the TUN address flags). */
export function parseIPv6(text: string, what: string): string {
  const value = text.trim().replace(/^\[(.*)\]$/, "$1");
  if (!isIPv6(value)) throw new UsageError(`${what}: "${text}" is not an IPv6 address`);
  return value;
}

/** Formats an address and port the way users write it: `1.2.3.4:5`, `[::1]:5`. */
export function formatAddress(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}
