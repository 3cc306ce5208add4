/**
 * The optional handshake packet (`--handshake-packet FILE`): read once at start and checked
 * against the MTU, because it travels as one unsegmented TCP payload.
 */
import { readFile } from "node:fs/promises";
import { errnoCode, UsageError } from "./errors.js";
import type { CommonConfig } from "./options.js";

/** IPv4 header (20) or IPv6 header (40) plus a TCP header without options (20). */
export function segmentOverhead(ipv6: boolean): number {
  return (ipv6 ? 40 : 20) + 20;
}

/** The largest payload one segment carries at `mtu` on every family in use. */
export function maxPayload(mtu: number, ipv6Used: boolean): number {
  return mtu - segmentOverhead(ipv6Used);
}

/** The configured handshake packet (checked against the MTU), or undefined without one. */
export async function configuredHandshakePacket(config: CommonConfig): Promise<Buffer | undefined> {
  if (config.handshakePacketPath === undefined) return undefined;
  return readHandshakePacket(
    config.handshakePacketPath,
    maxPayload(config.mtu, config.ipv6 !== undefined),
  );
}

/** Reads the handshake packet, refusing a missing, unreadable, empty or oversized file. */
export async function readHandshakePacket(path: string, maxBytes: number): Promise<Buffer> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    const code = errnoCode(err);
    const why =
      code === "ENOENT"
        ? "does not exist"
        : code === "EACCES" || code === "EPERM"
          ? "is not readable (permission denied)"
          : code === "EISDIR"
            ? "is a directory"
            : `cannot be read (${code ?? "error"})`;
    throw new UsageError(`--handshake-packet: ${path} ${why}; give a readable file`);
  }
  if (data.length === 0) {
    throw new UsageError(`--handshake-packet: ${path} is empty; an empty datagram cannot be sent`);
  }
  if (data.length > maxBytes) {
    throw new UsageError(
      `--handshake-packet: ${path} is ${data.length} bytes but at most ${maxBytes} fit in one segment at this MTU; use a smaller file or a larger --mtu`,
    );
  }
  return data;
}
