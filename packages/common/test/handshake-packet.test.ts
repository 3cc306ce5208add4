import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { maxPayload, readHandshakePacket } from "../src/handshake-packet.js";

const dir = mkdtempSync(join(tmpdir(), "ftc-hs-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("handshake packet", () => {
  it("fits a segment: MTU minus IP and TCP headers", () => {
    expect(maxPayload(1500, false)).toBe(1460);
    expect(maxPayload(1500, true)).toBe(1440);
  });
  it("reads a file that fits, to the byte", async () => {
    const path = join(dir, "ok.bin");
    writeFileSync(path, Buffer.alloc(1440, 7));
    expect((await readHandshakePacket(path, 1440)).length).toBe(1440);
  });
  it("refuses an oversized, empty, missing or directory file", async () => {
    const big = join(dir, "big.bin");
    writeFileSync(big, Buffer.alloc(1441));
    await expect(readHandshakePacket(big, 1440)).rejects.toThrow(
      /is 1441 bytes but at most 1440 fit/,
    );
    const empty = join(dir, "empty.bin");
    writeFileSync(empty, "");
    await expect(readHandshakePacket(empty, 1440)).rejects.toThrow(/is empty/);
    await expect(readHandshakePacket(join(dir, "nope"), 1440)).rejects.toThrow(/does not exist/);
    await expect(readHandshakePacket(dir, 1440)).rejects.toThrow(/is a directory/);
  });
  it("refuses a device or a huge file at once, without reading it whole", async () => {
    // /dev/zero never ends: reading it whole never finished (or ran out of memory).
    const started = Date.now();
    await expect(readHandshakePacket("/dev/zero", 1440)).rejects.toThrow(
      /--handshake-packet: \/dev\/zero is not a regular file/,
    );
    // A sparse 64 GiB file: its size is known without reading a byte.
    const huge = join(dir, "huge.bin");
    const fd = openSync(huge, "w");
    ftruncateSync(fd, 64 * 1024 ** 3);
    closeSync(fd);
    await expect(readHandshakePacket(huge, 1440)).rejects.toThrow(
      /is 68719476736 bytes but at most 1440 fit/,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
