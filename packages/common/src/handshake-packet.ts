/**
 * The optional handshake packet (`--handshake-packet FILE`): read once at start and checked
 * against the MTU, because it travels as one unsegmented TCP payload.
 */
import { type FileHandle, open, stat } from "node:fs/promises";
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
  const refuse = (why: string) =>
    new UsageError(`--handshake-packet: ${path} ${why}; give a readable file`);
  const tooBig = (size: string) =>
    new UsageError(
      `--handshake-packet: ${path} is ${size} bytes but at most ${maxBytes} fit in one segment at this MTU; use a smaller file or a larger --mtu`,
    );
  // The size is checked before anything is read, and then no more than one byte past the
  // limit is read: a device (/dev/zero) or a huge file is refused without reading it whole.
  // Only regular files: opening a FIFO would wait for a writer, a device has no size.
  let handle: FileHandle | undefined;
  try {
    const info = await stat(path);
    if (info.isDirectory()) throw refuse("is a directory");
    if (!info.isFile()) throw refuse("is not a regular file");
    if (info.size > maxBytes) throw tooBig(String(info.size));
    handle = await open(path, "r");
    const data = Buffer.alloc(maxBytes + 1);
    let length = 0;
    while (length < data.length) {
      const { bytesRead } = await handle.read(data, length, data.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    // The file grew between the size check and the read.
    if (length > maxBytes) throw tooBig(`more than ${maxBytes}`);
    if (length === 0) {
      throw new UsageError(
        `--handshake-packet: ${path} is empty; an empty datagram cannot be sent`,
      );
    }
    return Buffer.from(data.subarray(0, length));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw refuse(describeReadError(err));
  } finally {
    await handle?.close();
  }
}

function describeReadError(err: unknown): string {
  const code = errnoCode(err);
  if (code === "ENOENT") return "does not exist";
  if (code === "EACCES" || code === "EPERM") return "is not readable (permission denied)";
  if (code === "EISDIR") return "is a directory";
  return `cannot be read (${code ?? "error"})`;
}
